"""The account rules of docs/domain.md, as pure checks. Each broken rule has its own `code`."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from stdnum.cn import ric

from gateway import errors

HALL_STAFF = "hall_staff"  # the role of the staff of the tax service hall (办税服务厅)


class IdType(StrEnum):
    RESIDENT_ID = "resident_id"  # 居民身份证
    PASSPORT = "passport"  # 护照
    HK_MACAU_PERMIT = "hk_macau_permit"  # 港澳居民来往内地通行证
    TAIWAN_PERMIT = "taiwan_permit"  # 台湾居民来往大陆通行证
    FOREIGN_PERMANENT_RESIDENT = "foreign_permanent_resident"  # 外国人永久居留身份证


_ID_FORMATS: dict[IdType, re.Pattern[str]] = {
    IdType.PASSPORT: re.compile(r"[A-Z0-9]{5,17}", re.ASCII),
    IdType.HK_MACAU_PERMIT: re.compile(r"[HM]\d{8}(\d{2})?", re.ASCII),
    IdType.TAIWAN_PERMIT: re.compile(r"\d{8}(\d{2})?", re.ASCII),
    IdType.FOREIGN_PERMANENT_RESIDENT: re.compile(r"[A-Z]{3}\d{12}|9\d{16}[0-9X]", re.ASCII),
}

# Letters (any case, case-sensitive), digits, CJK ideographs of every plane, underscore.
_LOGIN_NAME = re.compile(r"[A-Za-z0-9_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]{2,16}")
_PHONE = re.compile(r"1[3-9][0-9]{9}")
# The password's alphabet: printable ASCII without the space (U+0021-U+007E). Its four classes are
# counted over this alphabet alone; a Chinese character or a full-width digit is no "special character".
_PASSWORD_CHARACTERS = re.compile(r"[\x21-\x7e]*")
_SPECIAL = re.compile(r"[!-/:-@\[-`{-~]")


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
    if id_type is IdType.FOREIGN_PERMANENT_RESIDENT and len(value) == 18 and value[-1] != ric.calc_check_digit(value):
        # The 2023 card's 18-character number carries the resident ID's ISO 7064 check digit.
        raise errors.BadRequest("The permanent residence ID number has a wrong check digit.", code="invalid_id_number")
    return value


# GB/T 2260 province-level divisions: 34 codes (the first two digits of every division code).
PROVINCES: dict[str, str] = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省",
    "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省", "35": "福建省", "36": "江西省", "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区", "46": "海南省",
    "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省", "54": "西藏自治区",
    "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区", "65": "新疆维吾尔自治区",
    "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区",
}  # fmt: skip
_REGION = re.compile(r"[0-9]{6}")
_NATIONALITY = re.compile(r"[A-Z]{3}")
# Identity documents of people with a household (户籍) in the mainland: only they are asked for one.
MAINLAND_HOUSEHOLD = frozenset({IdType.RESIDENT_ID})


@dataclass(frozen=True, slots=True)
class Division:
    code: str  # six digits: PPCCXX (province, prefecture, county)
    name: str
    county_level: bool  # a county-level division, or a prefecture-level city without counties (东莞市)


_HISTORY = re.compile(r"\[(\d{4})?-(\d{4})?\]")


def _current_name(names: str) -> str | None:
    """stdnum's loc.dat keeps every name a code has had ("[1983-1986]郊区,[1987-]白云区"): the name
    in use today, or None for a code that is no longer used ("[-2010]崇文区")."""
    last = names.split(",")[-1]
    found = _HISTORY.match(last)
    if found is None:
        return last
    return None if found.group(2) else last[found.end() :]


@cache
def divisions() -> dict[str, Division]:
    """GB/T 2260 administrative divisions in use today, by code: provinces (PP0000), prefectures
    (PPCC00) and counties (PPCCXX), from the division table python-stdnum ships (stdnum/cn/loc.dat,
    also what validates the birth place of resident ID numbers). The "市辖区" placeholders of
    county rank (PPCC01) are left out: they name no place."""
    text = resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    province = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        code, _, rest = line.strip().partition(" ")
        names = rest.partition("=")[2].strip().strip('"')
        if not line.startswith(" "):
            province = code
            found[province + "0000"] = names
            continue
        name = _current_name(names)
        if name is not None and code != "0000" and (name != "市辖区" or code.endswith("00")):
            found[province + code] = name
    with_counties = {code[:4] for code in found if not code.endswith("00")}
    return {
        code: Division(code, name, not code.endswith("00") or (code[2:4] != "00" and code[:4] not in with_counties))
        for code, name in sorted(found.items())
    }


def check_household_region(code: str) -> str:
    """户籍所在地 as a GB/T 2260 county-level division in use today (a county, district or
    county-level city; or a prefecture-level city that has no counties, such as 东莞市 441900)."""
    if not _REGION.fullmatch(code):
        raise errors.BadRequest(
            "The household region must be a 6-digit GB/T 2260 division code, e.g. 110105.",
            code="household_region_format",
        )
    division = divisions().get(code)
    if code[:2] not in PROVINCES or division is None:
        raise errors.BadRequest(
            f"The household region {code} is no GB/T 2260 division in use today: choose the county or district.",
            code="household_region_unknown",
        )
    if not division.county_level:
        raise errors.BadRequest(
            f"The household region {code} ({division.name}) is a province or prefecture: "
            "choose its county or district.",
            code="household_region_not_county",
        )
    return code


def household_region_for(id_type: IdType, code: str | None) -> str | None:
    """The household region asked of people with a mainland household (resident ID card holders),
    not of others: they may leave it out (a region they give is checked all the same)."""
    if code is None:
        if id_type in MAINLAND_HOUSEHOLD:
            raise errors.BadRequest(
                "The household region (户籍所在地) is required for resident ID card holders.",
                code="household_region_required",
            )
        return None
    return check_household_region(code)


def check_nationality(id_type: IdType, nationality: str | None) -> str:
    """ISO 3166-1 alpha-3; Chinese citizens' documents imply CHN."""
    if id_type in (IdType.RESIDENT_ID, IdType.HK_MACAU_PERMIT, IdType.TAIWAN_PERMIT):
        if nationality not in (None, "CHN"):
            raise errors.BadRequest(f"A {id_type.value} holder's nationality is CHN.", code="invalid_nationality")
        return "CHN"
    if nationality is None or not _NATIONALITY.fullmatch(nationality):
        raise errors.BadRequest(
            "Give the nationality as an ISO 3166-1 alpha-3 code, e.g. USA.", code="invalid_nationality"
        )
    return nationality


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
    """8-15 printable ASCII characters, no spaces, at least three of the four classes (upper-case,
    lower-case, digits, special characters), each counted over ASCII only."""
    if not 8 <= len(password) <= 15:
        raise errors.BadRequest("The password must be 8-15 characters long.", code="password_length")
    if any(ch.isspace() for ch in password):
        raise errors.BadRequest("The password must not contain spaces.", code="password_spaces")
    if not _PASSWORD_CHARACTERS.fullmatch(password):
        raise errors.BadRequest(
            "The password may use only letters A-Z and a-z, digits 0-9 and the ASCII special characters "
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ (no Chinese, full-width or control characters).",
            code="password_invalid_character",
        )
    classes = sum(
        (
            any("A" <= ch <= "Z" for ch in password),
            any("a" <= ch <= "z" for ch in password),
            any("0" <= ch <= "9" for ch in password),
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
