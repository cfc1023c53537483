"""Outputs: read the buffer after their own cursor, deliver, acknowledge. At least once."""
