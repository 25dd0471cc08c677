"""`qrgate login` and `qrgate scan`: the reference clients on the command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import platform
import sys
from typing import Any

from gateway.clients import desktop, phone, units
from gateway.settings import Settings

COMMANDS = ("login", "scan", "units")


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

    unit = commands.add_parser("units", help="your units, as the desktop's unit step (reference client)")
    unit_commands = unit.add_subparsers(dest="units_command", required=True)
    link = unit_commands.add_parser("link", help="link yourself to a unit with its TIN and declaration password")
    link.add_argument("tin", help="the unit's taxpayer identification number (unified social credit code)")
    link.add_argument("--url", default=None, help="the gateway's base URL (default: QRGATE_PUBLIC_URL)")
    link.add_argument(
        "--token-file", default=None, help=f"the token response of `qrgate login --json` (default: ${units.TOKEN_ENV})"
    )
    link.add_argument("--password-stdin", action="store_true", help="read the declaration password from standard input")
    link.add_argument("--json", action="store_true", help="print the answer (with the unit token) on stdout")


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
    if args.command == "units":
        return link_unit(base_url, args, password)
    prompts = phone.Prompts(ask=input, secret=getpass.getpass, say=print)
    try:
        return phone.scan(base_url, args.qr_content, prompts, identifier=args.identifier, password=password)
    except (KeyboardInterrupt, EOFError):
        print()
        return 130


def _ask(prompt: str) -> str:
    """A question on stderr (stdout is for --json), its answer a line of stdin."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def link_unit(base_url: str, args: argparse.Namespace, password: str | None) -> int:
    prompts = phone.Prompts(ask=_ask, secret=getpass.getpass, say=lambda text: print(text, file=sys.stderr))
    try:
        token = units.access_token(args.token_file)
    except units.LinkFailed as exc:
        prompts.say(f"qrgate units link: {exc}")
        return 1
    try:
        return units.link(base_url, args.tin, prompts, token=token, password=password, as_json=args.json)
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return 130
