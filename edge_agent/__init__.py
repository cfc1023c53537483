"""edge-agent: PLC data -> machine facts -> store-and-forward -> MES."""

__version__ = "0.1.0"
