"""Reference clients of the QR-login protocol for the terminal: `qrgate login` (the desktop) and
`qrgate scan` (the phone). docs/clients.md walks client teams through the same steps."""
