"""The `qrgate` command: serve, and the admin tasks that share the server's settings."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from gateway import errors, logs, rules, serving
from gateway.app import create_app
from gateway.backends import password_hashing
from gateway.clients import commands as client_commands
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.draining import Draining
from gateway.oidc import commands as oidc_commands
from gateway.settings import Settings
from gateway.tokens import keys
from gateway.units import commands as unit_commands


class GatewayServer(uvicorn.Server):
    """uvicorn, plus a drain on shutdown: readiness fails at once while requests are still served
    for `drain_delay` seconds (load balancers notice), then our WebSockets close with 1001 (uvicorn
    would close them with 1012) so desktops reconnect elsewhere, then uvicorn shuts down."""

    def __init__(
        self, config: uvicorn.Config, draining: Draining, drain_delay: float, ops: uvicorn.Config | None = None
    ) -> None:
        super().__init__(config)
        self.draining = draining
        self.drain_delay = drain_delay
        # The operations port (/healthz, /readyz, /metrics): up first, down last, on this event loop.
        self.ops = uvicorn.Server(ops) if ops is not None else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.ops is not None:
            self.ops.config.load()
            self.ops.lifespan = self.ops.config.lifespan_class(self.ops.config)
            await self.ops.startup()  # a port in use ends the process here, before the app starts
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.draining.not_ready.set()
        await asyncio.sleep(self.drain_delay)
        for server in self.servers:
            server.close()
        self.draining.close_connections()
        # Let every socket send its 1001 before uvicorn closes what is left (with 1012).
        await self.draining.sockets_closed(timeout=5.0)
        await super().shutdown(sockets)
        if self.ops is not None and self.ops.started:
            await self.ops.shutdown()


def serve(settings: Settings, host: str, port: int) -> None:
    logs.configure(settings.log_level, settings.log_format)
    settings = settings.model_copy(
        update={"http_max_connections": serving.connections_within_open_files(settings.http_max_connections)}
    )
    draining = Draining()
    app = create_app(settings, draining=draining)
    config = serving.server_config(
        app,
        settings,
        host,
        port,
        proxy_headers=False,  # gateway/middleware.py ForwardedMiddleware reads them (QRGATE_TRUSTED_PROXIES)
        timeout_graceful_shutdown=10,
        backlog=4096,
        lifespan="on",
        access_log=False,
        log_config=None,
    )
    ops = serving.ops_config(app.state.ops_app, settings, host) if settings.metrics_port else None
    server = GatewayServer(config, draining, settings.drain_delay, ops)
    server.run()


async def add_person_record(
    settings: Settings, *, login_name: str, phone: str, name: str, id_type: str, id_number: str, password: str
) -> str:
    """Validate by the account rules, hash the password, and add the person; returns the new id."""
    kind = rules.IdType(id_type)
    engine = create_engine(settings.database_url)
    hashing = password_hashing(settings)
    try:
        if settings.database_auto_migrate:
            await migrate(engine)
        return await PersonDirectory(engine).add(
            id_type=kind,
            id_number=rules.normalise_id_number(kind, id_number),
            name=rules.normalise_name(name),
            login_name=rules.check_login_name(login_name),
            phone=rules.check_phone(phone),
            password_hash=await hashing.hash(rules.check_password(password)),
        )
    finally:
        hashing.close()
        await engine.dispose()


async def upgrade_database(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def manage_keys(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(settings.keys_file)
    ring = keys.load_or_create(path, settings.signing_alg)
    if args.keys_command == "list":
        signing = ring.signing_key().kid
        for key in ring.keys:
            created = datetime.fromtimestamp(key.created_at, UTC).isoformat(timespec="seconds")
            active = datetime.fromtimestamp(key.active_from, UTC).isoformat(timespec="seconds")
            mark = "  signing" if key.kid == signing else ""
            if key.alg == keys.ID_TOKEN_ONLY:
                mark = "  id_tokens of RS256 relying parties"
            print(f"{key.kid}  {key.alg:6}  created {created}  active from {active}{mark}")
        return 0
    if args.keys_command == "rotate":
        delay = settings.key_activation_delay if args.activation_delay is None else args.activation_delay
        key = keys.rotate(path, args.alg or settings.signing_alg, activation_delay=delay)
        print(f"{key.kid}: published now, signs from {datetime.fromtimestamp(key.active_from, UTC).isoformat()}")
        return 0
    try:
        keys.retire(path, args.kid, access_token_ttl=settings.access_token_ttl)
    except keys.RetireRefused as exc:
        print(f"qrgate: refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.kid}: retired")
    return 0


async def grant_staff(settings: Settings, login_name: str) -> str:
    """Give the person with this login name the hall_staff role (audited); returns the person id."""
    from gateway.directory.audit import AuditLog

    engine = create_engine(settings.database_url)
    try:
        if settings.database_auto_migrate:
            await migrate(engine)
        directory = PersonDirectory(engine)
        person = await directory.find_by_identifier(rules.check_login_name(login_name))
        if person is None or person.login_name != login_name:
            raise errors.NotFound(f"No person has the login name {login_name!r}.", code="person_not_found")
        await directory.grant_role(person.id, rules.HALL_STAFF)
        await AuditLog(engine).record("role_granted", person.id, actor="cli", detail=rules.HALL_STAFF)
        return person.id
    finally:
        await engine.dispose()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qrgate", description="QR-login and session gateway.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--demo", action="store_true", help="seed a demo person and units; print how to log in")

    db = commands.add_parser("db", help="database tasks").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply the migrations")

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("list", help="list the keys: kid, algorithm, created, active from, signing now")
    rotate = keys.add_parser("rotate", help="add a key; it is published at once and signs after a delay")
    rotate.add_argument(
        "--alg",
        choices=["ES256", "EdDSA", "RS256"],
        default=None,
        help="default: QRGATE_SIGNING_ALG; RS256 adds a key for the id_tokens of relying parties registered for it",
    )
    rotate.add_argument("--activation-delay", type=int, default=None, help="default: QRGATE_KEY_ACTIVATION_DELAY")
    retire = keys.add_parser("retire", help="remove a key once no token it signed can be alive")
    retire.add_argument("kid")

    admin = commands.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    person = admin.add_parser("person", help="people").add_subparsers(dest="person_command", required=True)
    add = person.add_parser("add", help="add a person to the directory; prints the new person id")
    add.add_argument("--login-name", required=True)
    add.add_argument("--phone", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--id-type", required=True, choices=[t.value for t in rules.IdType])
    add.add_argument("--id-number", required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    staff = admin.add_parser("staff", help="hall staff").add_subparsers(dest="staff_command", required=True)
    grant = staff.add_parser("grant", help="give a person the hall_staff role (registration codes, hall resets)")
    grant.add_argument("login_name")
    unit_commands.add_parsers(commands, admin)
    oidc_commands.add_parsers(admin)
    client_commands.add_parsers(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # e.g. a dev-only feature with QRGATE_PRODUCTION=true
        print(f"qrgate: refusing to start, the settings are invalid:\n{exc}", file=sys.stderr)
        return 2
    if args.command in client_commands.COMMANDS:
        return client_commands.run(settings, args)
    if args.command == "serve":
        if args.demo:
            from gateway.web import demo

            settings = demo.prepare(settings, args.host, args.port)
        serve(settings, args.host, args.port)
        return 0
    if args.command == "db":
        asyncio.run(upgrade_database(settings))
        print("database is at the newest schema")
        return 0
    if args.command == "keys":
        return manage_keys(settings, args)
    if args.command == "serve-units":
        return unit_commands.serve_units(settings, args)
    if args.command == "admin" and args.admin_command == "unit":
        return unit_commands.run_admin(settings, args)
    if args.command == "admin" and args.admin_command == "client":
        return oidc_commands.run_admin(settings, args)
    if args.command == "admin" and args.admin_command == "person":
        password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
        try:
            adding = add_person_record(
                settings,
                login_name=args.login_name,
                phone=args.phone,
                name=args.name,
                id_type=args.id_type,
                id_number=args.id_number,
                password=password,
            )
            print(asyncio.run(adding))
        except errors.GatewayError as exc:
            print(f"qrgate: {exc.code}: {exc.detail}", file=sys.stderr)
            return 2
        return 0
    if args.command == "admin" and args.admin_command == "staff":
        try:
            person_id = asyncio.run(grant_staff(settings, args.login_name))
        except errors.GatewayError as exc:
            print(f"qrgate: {exc.code}: {exc.detail}", file=sys.stderr)
            return 2
        print(f"{args.login_name} ({person_id}) is now hall staff")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
