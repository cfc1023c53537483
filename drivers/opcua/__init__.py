"""OPC UA driver (asyncua). Import `drivers.opcua.driver` for the client; `address` is pure (no asyncua import)."""
