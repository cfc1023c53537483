"""Modbus TCP and RTU driver (pymodbus). Import `drivers.modbus.driver` for the clients; `address` and `planner` are pure. See README.md."""
