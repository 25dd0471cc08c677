"""The units service's pure parts: TIN and declaration-password rules, unit tokens, the
recent-login check, and how the gateway's JWKS is reached (no I/O but a key file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.settings import Settings
from gateway.tokens.keys import KeyFile
from gateway.tokens.verifier import InvalidToken
from gateway.units import access, rules
from gateway.units.service import units_keys_file
from gateway.units.tokens import UnitTokens


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("91110000600037341L", "91110000600037341L"),
        ("91110000600037341l", "91110000600037341L"),
        (" 9111 0000 6000 3734 1L ", "91110000600037341L"),
        ("9111-0000-6000-3734-1L", "91110000600037341L"),
    ],
)
def test_tins_are_unified_social_credit_codes(raw: str, canonical: str) -> None:
    assert rules.check_tin(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    ["91110000600037341X", "91110000600037341", "9111000060003734100", "", "x" * 18, "911100006000373I1L", "1" * 33],
)
def test_bad_tins(raw: str) -> None:
    with pytest.raises(rules.InvalidTin):
        rules.check_tin(raw)


@pytest.mark.parametrize("password", ["123456", "Decl-0001", "a" * 20, "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"[:20]])
def test_declaration_passwords_accepted(password: str) -> None:
    assert rules.check_declaration_password(password) == password


@pytest.mark.parametrize("password", ["12345", "a" * 21, "with space", "申报密码申报密码", "tab\there", "nul\x00xxxx"])
def test_declaration_passwords_refused(password: str) -> None:
    with pytest.raises(rules.InvalidDeclarationPassword):
        rules.check_declaration_password(password)


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"public_url": "https://tax.example/", "keys_file": str(tmp_path / "k.json")}
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_unit_tokens_round_trip(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, units_token_ttl=60)
    tokens = UnitTokens(settings, KeyFile(tmp_path / "units.json", "ES256"))
    assert tokens.issuer == "https://tax.example/units"
    issued = tokens.issue(
        subject="p_x",
        session_id="s" * 22,
        client_id="web",
        auth_time=int(time.time()),
        unit={"tin": "91110000600037341L", "role": "tax_staff", "via": "ca"},
        jkt="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
    )
    assert issued["token_type"] == "DPoP"
    assert issued["expires_in"] == 60
    claims = await tokens.verify(issued["unit_token"])
    assert claims["unit"] == {"tin": "91110000600037341L", "role": "tax_staff", "via": "ca"}
    assert claims["cnf"] == {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
    assert claims["aud"] == "qrgate-units"
    # Another units service (other keys) does not accept it, nor does a tampered one pass.
    other = UnitTokens(settings, KeyFile(tmp_path / "other.json", "ES256"))
    with pytest.raises(InvalidToken):
        await other.verify(issued["unit_token"])
    head, body, signature = issued["unit_token"].split(".")
    with pytest.raises(InvalidToken):
        await tokens.verify(f"{head}.{body}x.{signature}")
    bad_unit = tokens.issue(
        subject="p_x",
        session_id="s" * 22,
        client_id="web",
        auth_time=1,
        unit={"tin": "91110000600037341L", "role": "owner", "via": "magic"},
    )
    with pytest.raises(InvalidToken, match="names no unit"):
        await tokens.verify(bad_unit["unit_token"])


def test_the_recent_login_check() -> None:
    claims = {"auth_time": 1000}
    access.require_recent_login(claims, 600, now=1600)  # type: ignore[arg-type]
    with pytest.raises(access.LoginTooOld) as too_old:
        access.require_recent_login(claims, 600, now=1601)  # type: ignore[arg-type]
    assert too_old.value.status == 401
    assert too_old.value.code == "insufficient_user_authentication"
    assert "max_age=600" in too_old.value.headers["WWW-Authenticate"]


def test_where_the_gateway_and_the_keys_are(tmp_path: Path) -> None:
    mounted = settings_for(tmp_path)
    assert access.gateway_url(mounted) == "https://tax.example"
    assert access.gateway_issuer(mounted) == "https://tax.example"
    assert units_keys_file(mounted) == tmp_path / "units-k.json"
    alone = settings_for(
        tmp_path,
        units_gateway_url="http://gateway.internal:8000/",
        units_gateway_issuer="https://login.example",
        units_keys_file=str(tmp_path / "mine.json"),
    )
    assert access.gateway_url(alone) == "http://gateway.internal:8000"
    assert access.gateway_issuer(alone) == "https://login.example"
    assert units_keys_file(alone) == tmp_path / "mine.json"
    verifier, keys = access.gateway_verifier(alone)
    assert keys.url == "http://gateway.internal:8000/.well-known/jwks.json"
    assert verifier.accepted == ("qrgate-sso", "units")
