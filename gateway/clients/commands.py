"""`qrgate login` and `qrgate scan`: the reference clients on the command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import platform
import sys
from typing import Any

from gateway.clients import desktop, phone
from gateway.settings import Settings

COMMANDS = ("login", "scan")


def add_parsers(commands: Any) -> None:
    login = commands.add_parser("login", help="log in by QR code, as the desktop does (reference client)")
    login.add_argument("--url", default=None, help="the gateway's base URL (default: QRGATE_PUBLIC_URL)")
    login.add_argument("--device-name", default=f"qrgate login on {platform.node()}"[:128])
    login.add_argument("--transport", choices=["ws", "poll"], default="ws", help="WebSocket (default) or long-poll")
    login.add_argument("--refreshes", type=int, default=10, help="new codes to show after expiry before giving up")
    login.add_argument("--json", action="store_true", help="print the token response (JSON) on stdout")
    login.add_argument("--invert", action="store_true", help="without colours: light modules as ink")

    scan = commands.add_parser("scan", help="scan and confirm a QR login, as the mobile app does (reference client)")
    scan.add_argument("qr_content", help="what the QR code says: {gateway}/q/{qr_id}")
    scan.add_argument("--url", default=None, help="the gateway's base URL (default: QRGATE_PUBLIC_URL)")
    scan.add_argument("--identifier", default=None, help="phone, login name or ID number (asked when missing)")
    scan.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def run(settings: Settings, args: argparse.Namespace) -> int:
    base_url = (args.url or settings.public_url).rstrip("/")
    if args.command == "login":
        colour = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        terminal = desktop.Terminal(colour=colour, invert=args.invert)
        try:
            return asyncio.run(
                desktop.login(
                    base_url,
                    terminal,
                    device_name=args.device_name,
                    transport=args.transport,
                    refreshes=args.refreshes,
                    as_json=args.json,
                )
            )
        except KeyboardInterrupt:  # the code was abandoned on the way out
            return 130
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    prompts = phone.Prompts(ask=input, secret=getpass.getpass, say=print)
    try:
        return phone.scan(base_url, args.qr_content, prompts, identifier=args.identifier, password=password)
    except (KeyboardInterrupt, EOFError):
        print()
        return 130
