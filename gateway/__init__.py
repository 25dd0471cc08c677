"""qrgate: async QR-login and session gateway."""

__version__ = "0.1.0"
