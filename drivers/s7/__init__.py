"""Siemens S7 driver (python-snap7 asyncio client). `address` and `planner` are pure; import `drivers.s7.driver` for the client."""
