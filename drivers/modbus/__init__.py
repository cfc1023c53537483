"""Modbus TCP driver (pymodbus). Import `drivers.modbus.driver` for the client; `address` and `planner` are pure."""
