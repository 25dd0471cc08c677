"""The account rules of DOMAIN.md, as pure checks. Each broken rule has its own `code`."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from stdnum.cn import ric

from gateway import errors


class IdType(StrEnum):
    RESIDENT_ID = "resident_id"  # 居民身份证
    PASSPORT = "passport"  # 护照
    HK_MACAU_PERMIT = "hk_macau_permit"  # 港澳居民来往内地通行证
    TAIWAN_PERMIT = "taiwan_permit"  # 台湾居民来往大陆通行证
    FOREIGN_PERMANENT_RESIDENT = "foreign_permanent_resident"  # 外国人永久居留身份证


_ID_FORMATS: dict[IdType, re.Pattern[str]] = {
    IdType.PASSPORT: re.compile(r"[A-Z0-9]{5,17}"),
    IdType.HK_MACAU_PERMIT: re.compile(r"[HM]\d{8}(\d{2})?"),
    IdType.TAIWAN_PERMIT: re.compile(r"\d{8}(\d{2})?"),
    IdType.FOREIGN_PERMANENT_RESIDENT: re.compile(r"[A-Z]{3}\d{12}|9\d{16}[0-9X]"),
}

# Letters (any case, case-sensitive), digits, CJK ideographs of every plane, underscore.
_LOGIN_NAME = re.compile(r"[A-Za-z0-9_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]{2,16}")
_PHONE = re.compile(r"1[3-9]\d{9}")
_SPECIAL = re.compile(r"[^A-Za-z0-9\s]")


def normalise_id_number(id_type: IdType, id_number: str) -> str:
    """Validate an ID number for its type and return its canonical form."""
    value = id_number.strip().upper()
    if id_type is IdType.RESIDENT_ID:
        try:
            return str(ric.validate(value))
        except Exception as exc:  # stdnum raises its own ValidationError subclasses
            raise errors.BadRequest(
                "The resident ID number is not valid (18 characters, checksum).", code="invalid_id_number"
            ) from exc
    if not _ID_FORMATS[id_type].fullmatch(value):
        raise errors.BadRequest(f"The ID number is not a valid {id_type.value} number.", code="invalid_id_number")
    return value


def normalise_name(name: str) -> str:
    value = unicodedata.normalize("NFC", name.strip())
    if not 1 <= len(value) <= 100 or any(unicodedata.category(ch).startswith("C") for ch in value):
        raise errors.BadRequest("The name must be 1-100 printable characters.", code="invalid_name")
    return value


def check_login_name(login_name: str) -> str:
    value = unicodedata.normalize("NFC", login_name)
    if not 2 <= len(value) <= 16:
        raise errors.BadRequest("The login name must be 2-16 characters long.", code="login_name_length")
    if not _LOGIN_NAME.fullmatch(value):
        raise errors.BadRequest(
            "The login name may use only letters, digits, Chinese characters and underscore.",
            code="login_name_characters",
        )
    if value.isdigit():
        raise errors.BadRequest("The login name must not be digits only.", code="login_name_all_digits")
    return value


def check_phone(phone: str) -> str:
    value = phone.strip()
    if not _PHONE.fullmatch(value):
        raise errors.BadRequest("The phone number must be an 11-digit mainland mobile number.", code="invalid_phone")
    return value


def check_password(password: str) -> str:
    if not 8 <= len(password) <= 15:
        raise errors.BadRequest("The password must be 8-15 characters long.", code="password_length")
    if any(ch.isspace() for ch in password):
        raise errors.BadRequest("The password must not contain spaces.", code="password_spaces")
    classes = sum(
        (
            any("A" <= ch <= "Z" for ch in password),
            any("a" <= ch <= "z" for ch in password),
            any(ch.isdigit() for ch in password),
            bool(_SPECIAL.search(password)),
        )
    )
    if classes < 3:
        raise errors.BadRequest(
            "The password must use at least three of: upper-case, lower-case, digits, special characters.",
            code="password_too_simple",
        )
    return password


def mask_name(name: str) -> str:
    """张三 -> 张*, 欧阳娜娜 -> 欧***: enough for a person to recognise themself, no more."""
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)
