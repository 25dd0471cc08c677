"""`qrgate admin client add/list/remove`: the relying parties of the OpenID provider.

Each command writes the `relying_parties` table directly; a running gateway reads it again at most
every `oidc_clients_refresh` seconds, so a change takes effect without a restart. A confidential
client's secret is read from standard input only (an argument would be in the shell history and in
`ps`), and is never printed: `list` says only whether a client has one. `remove` also ends the
client's sessions in the state store. A client authenticating with
`private_key_jwt` registers its public keys instead (`--jwks-file`, `--jwks-uri`, or both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway import errors
from gateway.backends import create_store
from gateway.directory.db import create_engine, migrate
from gateway.oidc.client_sessions import ClientSessions
from gateway.oidc.clients import SCOPES, InvalidRelyingParty, RelyingParties, RelyingParty, new_party
from gateway.settings import Settings
from gateway.tokens.session_ends import SessionEndPublisher
from gateway.tokens.sessions import SessionManager


class ClientExists(errors.Conflict):
    code = "client_exists"


def add_parsers(admin: Any) -> None:
    """Add `client` to the `admin` subcommands (argparse subparsers)."""
    client = admin.add_parser("client", help="relying parties of the OpenID provider (browser single sign-on)")
    commands = client.add_subparsers(dest="client_command", required=True)

    add = commands.add_parser("add", help="register a relying party (a subsystem signing people in through qrgate)")
    add.add_argument("client_id", metavar="CLIENT_ID", help="1-64 letters, digits, '-', '_' or '.'")
    add.add_argument("--name", required=True, help="shown on the sign-in page (登录到 NAME)")
    add.add_argument(
        "--redirect-uri", dest="redirect_uris", action="append", required=True, metavar="URI",
        help="where codes are sent, matched exactly (repeat for more than one)",
    )  # fmt: skip
    kind = add.add_mutually_exclusive_group()  # one of these, or --jwks-file / --jwks-uri (checked below)
    kind.add_argument("--public", action="store_true", help="no secret: a browser or native app (PKCE alone)")
    kind.add_argument(
        "--secret-stdin", action="store_true", help="confidential: read its secret (32+ characters) from stdin"
    )
    add.add_argument(
        "--jwks-file", default=None, metavar="FILE",
        help="confidential, private_key_jwt: a JSON Web Key Set of its public signing keys (kept in the database)",
    )  # fmt: skip
    add.add_argument(
        "--jwks-uri", default=None, metavar="URI",
        help="confidential, private_key_jwt: where the gateway fetches its public keys (https)",
    )  # fmt: skip
    add.add_argument(
        "--post-logout-redirect-uri", dest="post_logout_redirect_uris", action="append", default=[], metavar="URI",
        help="where /logout may send the browser afterwards (repeatable)",
    )  # fmt: skip
    add.add_argument("--backchannel-logout-uri", default=None, metavar="URI", help="receives logout tokens")
    add.add_argument(
        "--scope", dest="scopes", action="append", choices=SCOPES, default=None, metavar="S",
        help=f"a scope it may ask for, repeatable: {', '.join(SCOPES)} (default: openid profile offline_access)",
    )  # fmt: skip
    add.add_argument(
        "--id-token-alg",
        choices=["RS256"],
        default=None,
        help="sign its id_tokens with RS256 (OpenID Connect's default, for libraries that expect it); "
        "without it: the gateway's signing algorithm (QRGATE_SIGNING_ALG)",
    )
    add.add_argument("--replace", action="store_true", help="replace a client registered under this id")

    commands.add_parser("list", help="the registered relying parties (secrets are never shown)")

    remove = commands.add_parser(
        "remove", help="unregister a relying party: its codes stop working and its sessions end (refresh tokens too)"
    )
    remove.add_argument("client_id", metavar="CLIENT_ID")


def describe(party: RelyingParty) -> list[str]:
    """A client as `list` prints it: a headline, then one line per URI."""
    kind = "public" if party.public else "confidential private_key_jwt" if party.uses_keys else "confidential"
    lines = [f"{party.client_id}  {kind}  {party.name!r}  scopes: {' '.join(sorted(party.scopes))}"]
    lines += [f"  redirect_uri: {uri}" for uri in party.redirect_uris]
    lines += [f"  post_logout_redirect_uri: {uri}" for uri in party.post_logout_redirect_uris]
    if party.backchannel_logout_uri:
        lines.append(f"  backchannel_logout_uri: {party.backchannel_logout_uri}")
    if party.id_token_alg:
        lines.append(f"  id_token_alg: {party.id_token_alg}")
    if party.jwks:
        kids = [str(key.get("kid", "-")) for key in json.loads(party.jwks)["keys"]]
        lines.append(f"  jwks: {len(kids)} key(s), kid {' '.join(kids)}")
    if party.jwks_uri:
        lines.append(f"  jwks_uri: {party.jwks_uri}")
    return lines


async def _with_parties(settings: Settings, task: Callable[[RelyingParties], Awaitable[str]]) -> str:
    engine = create_engine(settings.database_url)
    try:
        if settings.database_auto_migrate:
            await migrate(engine)
        return await task(RelyingParties(engine, refresh=0))
    finally:
        await engine.dispose()


def _jwks(path: str | None) -> object:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRelyingParty(f"--jwks-file: cannot read {path}: {exc.strerror}.") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidRelyingParty(f"--jwks-file: {path} is not JSON.") from exc


def _add(args: argparse.Namespace, secret: str | None) -> Callable[[RelyingParties], Awaitable[str]]:
    scopes = args.scopes if args.scopes is not None else ("openid", "profile", "offline_access")
    party = new_party(  # every rule checked before the database is touched
        args.client_id,
        name=args.name,
        redirect_uris=args.redirect_uris,
        secret=secret,
        post_logout_redirect_uris=args.post_logout_redirect_uris,
        backchannel_logout_uri=args.backchannel_logout_uri,
        scopes=scopes,
        id_token_alg=args.id_token_alg,
        jwks=_jwks(args.jwks_file),
        jwks_uri=args.jwks_uri,
    )

    async def add(parties: RelyingParties) -> str:
        existing = await parties.get(party.client_id)
        if existing is not None and not args.replace:
            raise ClientExists(f"A client {party.client_id!r} is registered already (--replace to replace it).")
        await parties.add(party)
        return f"client {party.client_id} {'replaced' if existing is not None else 'added'}"

    return add


async def _list(parties: RelyingParties) -> str:
    registered = await parties.all()
    if not registered:
        return "no relying parties are registered"
    return "\n".join(line for party in registered for line in describe(party))


def _remove(settings: Settings, client_id: str) -> Callable[[RelyingParties], Awaitable[str]]:
    async def remove(parties: RelyingParties) -> str:
        if not await parties.remove(client_id):
            raise errors.NotFound(f"No client {client_id!r} is registered.", code="client_not_found")
        if not settings.redis_url:
            return (
                f"client {client_id} removed; its sessions are in the gateway's own memory (no QRGATE_REDIS_URL): "
                "they can no longer refresh, and end with their access tokens"
            )
        return f"client {client_id} removed; {await end_sessions(settings, client_id)} session(s) ended"

    return remove


async def end_sessions(settings: Settings, client_id: str) -> int:
    """End the removed client's sessions (their refresh tokens die with them), then, once every
    gateway has read the client list again (`oidc_clients_refresh`) and so refuses the client, once
    more: a code exchanged meanwhile by a gateway that still knew the client made one more. No
    back-channel logout token is sent: the client is gone, and so is its session store's reason to be."""
    store = create_store(settings)
    await store.start()
    try:
        manager = SessionManager(settings, store, None)
        manager.on_end(SessionEndPublisher(settings, store).publish)  # resource servers hear of it too
        ending = ClientSessions(settings, store, manager)
        ended = await ending.end_all(client_id)
        await asyncio.sleep(settings.oidc_clients_refresh + 0.5)
        return ended + await ending.end_all(client_id)
    finally:
        await store.close()


def _task(settings: Settings, args: argparse.Namespace) -> Callable[[RelyingParties], Awaitable[str]]:
    if args.client_command == "add":
        keys = args.jwks_file is not None or args.jwks_uri is not None
        if [args.public, args.secret_stdin, keys].count(True) != 1:
            raise InvalidRelyingParty("Say how it authenticates: --public, --secret-stdin, or --jwks-file/--jwks-uri.")
        secret = None
        if args.secret_stdin:
            secret = sys.stdin.readline().rstrip("\r\n")
            if not secret:
                raise InvalidRelyingParty("--secret-stdin: standard input gave no secret.")
        return _add(args, secret)
    if args.client_command == "list":
        return _list
    return _remove(settings, args.client_id)


def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_with_parties(settings, _task(settings, args))))
    except errors.GatewayError as exc:
        print(f"qrgate: {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    return 0
