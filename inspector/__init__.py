"""inspector: real-time visual inspection with SPADE anomaly detection."""

__version__ = "0.1.0"
