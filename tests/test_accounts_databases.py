"""Characters from any plane through registration and lookup, on SQLite and PostgreSQL: names with
𠮷 (U+20BB7) and 𪚥 (U+2A6A5), decomposed input stored NFC, a login name outside the BMP."""

from __future__ import annotations

import asyncio
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.directory.db import create_engine
from gateway.directory.tables import person_registrations, persons
from tests.conftest import new_identity
from tests.support.accounts import (
    fresh_ip,
    identity_fields,
    login,
    new_staff,
    register,
    sms_challenge,
    sms_codes,
    solved_captcha,
)
from tests.support.databases import fresh_database
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
RARE_NAME = "𠮷𪚥"
DECOMPOSED_NAME = "吉Zoe\u0308"  # e + combining diaeresis: stored as ë


def stored(database_url: str, login_name: str) -> tuple[str, str, str]:
    async def read() -> tuple[str, str, str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                query = (
                    sa.select(persons.c.name, persons.c.login_name, person_registrations.c.household_region)
                    .join(person_registrations, person_registrations.c.person_id == persons.c.id)
                    .where(persons.c.login_name == login_name)
                )
                row = (await conn.execute(query)).one()
                return row.name, row.login_name, row.household_region
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_rare_characters_register_and_match(kind: str, tmp_path: Path) -> None:
    async with fresh_database(kind, tmp_path) as url:
        port = free_port()
        server = ThreadedGateway(make_settings(tmp_path, port, database_url=url), port).start()
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
                staff_person = new_identity()
                server.add_person(**staff_person)
                staff = await new_staff(http, server, staff_person)
                rare = {
                    **new_identity(),
                    "name": RARE_NAME,
                    "login_name": "𠮷野家_" + new_identity()["login_name"][-4:],
                }
                decomposed = {**new_identity(), "name": DECOMPOSED_NAME, "household_region": "650102"}
                with sms_codes() as codes:
                    await register(http, codes, staff, rare)
                    await register(http, codes, staff, decomposed)
                    name, login_name, region = stored(url, rare["login_name"])
                    assert [hex(ord(ch)) for ch in name] == ["0x20bb7", "0x2a6a5"]
                    assert (login_name, region) == (rare["login_name"], "110105")
                    assert stored(url, decomposed["login_name"])[0] == unicodedata.normalize("NFC", DECOMPOSED_NAME)
                    for identifier in (rare["login_name"], rare["id_number"], rare["phone"]):
                        assert (await login(http, identifier, rare["password"], fresh_ip())).status_code == 200
                    # Lookup by identity matches the rare name exactly, and the decomposed one in NFC.
                    for person in (rare, decomposed):
                        body = {"purpose": "reset_password", "identity": identity_fields(person)}
                        await sms_challenge(http, codes, body)
                    near_miss = {**identity_fields(rare), "name": "𠮷"}
                    response = await http.post(
                        "/v1/sms/challenges",
                        json={"purpose": "reset_password", "identity": near_miss, **await solved_captcha(http)},
                    )
                    # Answered like a registered identity, but with a made-up hint and no SMS.
                    assert response.status_code == 201, response.text
                    assert response.json()["phone_masked"] != rare["phone"][:3] + "****" + rare["phone"][-4:]
                    assert response.json()["challenge_id"] not in codes.codes
                    # A hall temporary password (persons.password_temporary) must be changed.
                    body = {**identity_fields(rare), "mode": "temporary_password"}
                    reset = await http.post("/v1/admin/password-resets", json=body, headers=staff)
                    temporary = reset.json()["temporary_password"]
                    first = await login(http, rare["phone"], temporary, fresh_ip())
                    assert (first.status_code, first.json()["code"]) == (403, "password_change_required")
                    ticket = {"reset_ticket": first.json()["change_ticket"], "new_password": "Own-Passw0rd"}
                    assert (await http.post("/v1/password/reset", json=ticket)).status_code == 204
                    assert (await login(http, rare["phone"], "Own-Passw0rd", fresh_ip())).status_code == 200
        finally:
            server.stop()
