"""pbx-bridge: call tracking for companies that run their own Asterisk."""

__version__ = "0.1.0"
