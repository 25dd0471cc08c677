"""The unit rules, as pure checks: TINs, roles, declaration passwords, the legacy cut-over."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum

from stdnum.cn import uscc
from stdnum.exceptions import ValidationError

from gateway import errors


class UnitRole(StrEnum):
    LEGAL_REP = "legal_rep"  # 法定代表人
    FINANCE_MANAGER = "finance_manager"  # 财务经理
    TAX_STAFF = "tax_staff"  # 办税人员


class UnitScope(StrEnum):
    """What a gateway access token lets its holder do at the units service (docs/units.md, "Scopes").
    Every route that needs a token names one (gateway/units/access.py `caller`)."""

    READ = "units.read"  # list the caller's units
    VERIFY = "units.verify"  # verify, enter, link, renew unit tokens, CA challenge and verify
    MANAGE = "units.manage"  # an officer's or the hall's: reset, grant, list and revoke authorizations, admin


# Who may reset the unit's declaration password through the app or WEB (docs/domain.md).
RESETTERS = frozenset({UnitRole.LEGAL_REP, UnitRole.FINANCE_MANAGER})


class Via(StrEnum):
    """How the unit token's holder proved the right to act for the unit."""

    DECLARATION_PASSWORD = "declaration_password"  # noqa: S105 (a name, not a password)
    AUTHORIZATION = "authorization"
    CA = "ca"


# A legacy login lets a unit in without a person: its token names this role.
LEGACY_ROLE = "unit"

_TIN = re.compile(r"[0-9A-HJ-NP-RTUW-Y]{18}", re.ASCII)
MAX_TIN_INPUT = 32
DECLARATION_PASSWORD_MIN = 6
DECLARATION_PASSWORD_MAX = 20
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+", re.ASCII)


class InvalidTin(errors.BadRequest):
    code = "invalid_tin"


class InvalidDeclarationPassword(errors.BadRequest):
    code = "invalid_declaration_password"


def check_tin(value: str) -> str:
    """A taxpayer identification number as an 18-character unified social credit code
    (GB 32100-2015, check character included), in its canonical upper-case form."""
    if len(value) > MAX_TIN_INPUT:
        raise InvalidTin("A TIN is the 18-character unified social credit code.")
    try:
        tin = str(uscc.validate(value))
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidTin(
            "The TIN is not a valid unified social credit code (18 characters, check character last)."
        ) from exc
    if not _TIN.fullmatch(tin):
        raise InvalidTin("The TIN is not a valid unified social credit code.")
    return tin


def check_declaration_password(value: str) -> str:
    """6-20 printable ASCII characters (letters, digits, specials), no spaces."""
    if not DECLARATION_PASSWORD_MIN <= len(value) <= DECLARATION_PASSWORD_MAX:
        raise InvalidDeclarationPassword(
            f"A declaration password has {DECLARATION_PASSWORD_MIN} to {DECLARATION_PASSWORD_MAX} characters."
        )
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise InvalidDeclarationPassword(
            "A declaration password uses letters, digits and special characters only, without spaces."
        )
    return value


# The cut-over date is a calendar date in China: it starts at 00:00 China Standard Time.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def legacy_allowed(cutover: date, now: datetime | None = None) -> bool:
    """Legacy logins (CA, declaration password without a person) work only before the cut-over."""
    moment = now or datetime.now(UTC)
    start = datetime(cutover.year, cutover.month, cutover.day, tzinfo=CHINA_STANDARD_TIME)
    return moment < start


def legacy_retired_message(cutover: date) -> str:
    """What a user of a retired login method should do instead, in Chinese and in English."""
    day = cutover.isoformat()
    return (
        f"自{cutover.year}年{cutover.month}月{cutover.day}日起，扣缴客户端不再支持CA证书登录和单位申报密码登录。"
        "请先在个人所得税APP或WEB端完成实名注册，再以实名账号（账号密码或扫码）登录，然后进行单位办税验证。"
        f" / Since {day}, the withholding client no longer accepts CA-certificate or declaration-password-only "
        "login. Register with your real name in the IIT mobile app or on the WEB, log in with that account "
        "(password or QR code), then verify the unit."
    )
