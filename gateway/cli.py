"""The `qrgate` command: serve, and the admin tasks that share the server's settings."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Sequence

import uvicorn

from gateway import errors
from gateway.accounts import rules
from gateway.app import create_app, password_hashing
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.settings import Settings


class GatewayServer(uvicorn.Server):
    """uvicorn, plus a drain step on shutdown: before uvicorn closes connections (it would close
    WebSockets with 1012), ours are told to close with 1001 so desktops reconnect elsewhere."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app
        gateway = getattr(getattr(getattr(app, "app", app), "state", None), "gateway", None)
        for server in self.servers:
            server.close()
        if gateway is not None:
            gateway.draining.event.set()
            await asyncio.sleep(0.2)
        await super().shutdown(sockets)


def serve(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        http="httptools",
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
        ws_max_size=settings.ws_max_message,
        ws_per_message_deflate=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        timeout_graceful_shutdown=10,
        lifespan="on",
        access_log=False,
    )
    GatewayServer(config).run()


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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qrgate", description="QR-login and session gateway.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)

    db = commands.add_parser("db", help="database tasks").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply the migrations")

    admin = commands.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    person = admin.add_parser("person", help="people").add_subparsers(dest="person_command", required=True)
    add = person.add_parser("add", help="add a person to the directory; prints the new person id")
    add.add_argument("--login-name", required=True)
    add.add_argument("--phone", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--id-type", required=True, choices=[t.value for t in rules.IdType])
    add.add_argument("--id-number", required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    if args.command == "serve":
        serve(settings, args.host, args.port)
        return 0
    if args.command == "db":
        asyncio.run(upgrade_database(settings))
        print("database is at the newest schema")
        return 0
    if args.command == "admin" and args.admin_command == "person":
        password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
        try:
            person_id = add_person_record(
                settings,
                login_name=args.login_name,
                phone=args.phone,
                name=args.name,
                id_type=args.id_type,
                id_number=args.id_number,
                password=password,
            )
            print(asyncio.run(person_id))
        except errors.GatewayError as exc:
            print(f"qrgate: {exc.code}: {exc.detail}", file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
