"""`qrgate serve-units` (the units service alone, trusting a gateway over HTTP) and
`qrgate admin unit ...` (create a unit, set its declaration password, assign a role): the operators'
side of the hall-staff endpoints, through the same code paths."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from gateway import errors, logs, serving
from gateway import rules as account_rules
from gateway.settings import Settings
from gateway.units.admin import assign_role, create_unit
from gateway.units.declaration import reset_declaration_password
from gateway.units.rules import UnitRole, check_tin
from gateway.units.service import UnitsService

CLI_ACTOR = "cli"
DEFAULT_PORT = 8001


def add_parsers(commands: Any, admin: Any) -> None:
    """Add `serve-units` to the top-level commands and `unit` to `admin` (argparse subparsers)."""
    run = commands.add_parser("serve-units", help="run the unit-verification service alone")
    run.add_argument("--gateway-url", default=None, help="the gateway's base URL (default: QRGATE_UNITS_GATEWAY_URL)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=DEFAULT_PORT)

    unit = admin.add_parser("unit", help="units (enterprises)").add_subparsers(dest="unit_command", required=True)
    create = unit.add_parser("create", help="add a unit")
    create.add_argument("--tin", required=True, help="unified social credit code (18 characters)")
    create.add_argument("--name", required=True)
    password = unit.add_parser("set-password", help="set a unit's declaration password (unlocks it)")
    password.add_argument("tin")
    password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    role = unit.add_parser("assign-role", help="give the person with this login name a role in the unit")
    role.add_argument("tin")
    role.add_argument("login_name")
    role.add_argument("role", choices=[r.value for r in UnitRole])


def serve_units(settings: Settings, args: argparse.Namespace) -> int:
    gateway_url = args.gateway_url or settings.units_gateway_url
    if not gateway_url:
        print("qrgate: serve-units needs --gateway-url (or QRGATE_UNITS_GATEWAY_URL)", file=sys.stderr)
        return 2
    from gateway.units.app import create_standalone_app

    logs.configure(settings.log_level, settings.log_format)
    configured = settings.model_copy(update={"units_gateway_url": gateway_url})
    config = uvicorn.Config(
        create_standalone_app(configured),
        host=args.host,
        port=args.port,
        http=serving.protocol_class(serving.ServerLimits.of(configured)),  # the gateway's own defences
        ws="none",
        timeout_keep_alive=configured.http_keep_alive_timeout,
        proxy_headers=False,  # gateway/middleware.py ForwardedMiddleware reads them (QRGATE_TRUSTED_PROXIES)
        timeout_graceful_shutdown=10,
        lifespan="on",
        access_log=False,
        log_config=None,
    )
    uvicorn.Server(config).run()
    return 0


async def _with_service(settings: Settings, task: Callable[[UnitsService], Awaitable[str]]) -> str:
    service = UnitsService.create(settings)
    await service.start()
    try:
        return await task(service)
    finally:
        await service.close()


async def _create(service: UnitsService, tin: str, name: str) -> str:
    canonical = await create_unit(service, tin=tin, name=name, declaration_password=None, actor=CLI_ACTOR)
    return f"unit {canonical} created"


async def _set_password(service: UnitsService, tin: str, password: str) -> str:
    await reset_declaration_password(service, tin, password, actor=CLI_ACTOR, how="cli")
    return f"declaration password of {tin} set"


async def _assign(service: UnitsService, tin: str, login_name: str, role: UnitRole) -> str:
    person = await service.directory.find_by_identifier(account_rules.check_login_name(login_name))
    if person is None or person.login_name != login_name:
        raise errors.NotFound(f"No person has the login name {login_name!r}.", code="person_not_found")
    await assign_role(service, tin, person.id, role, actor=CLI_ACTOR)
    return f"{login_name} ({person.id}) is now {role.value} of {tin}"


def _admin_task(args: argparse.Namespace) -> Callable[[UnitsService], Awaitable[str]]:
    if args.unit_command == "create":
        return lambda service: _create(service, args.tin, args.name)
    tin = check_tin(args.tin)
    if args.unit_command == "set-password":
        secret = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
        return lambda service: _set_password(service, tin, secret)
    role = UnitRole(args.role)
    return lambda service: _assign(service, tin, args.login_name, role)


def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_with_service(settings, _admin_task(args))))
    except errors.GatewayError as exc:
        print(f"qrgate: {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    return 0
