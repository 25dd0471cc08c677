"""The account rules of docs/domain.md as pure checks."""

from __future__ import annotations

import pytest

from gateway import errors, rules
from gateway.rules import IdType


@pytest.mark.parametrize("name", ["ab", "张三", "Tax_User_01", "𠮷野家", "a" * 16, "李_1"])
def test_good_login_names(name: str) -> None:
    assert rules.check_login_name(name) == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("a", "login_name_length"),
        ("a" * 17, "login_name_length"),
        ("12345678", "login_name_all_digits"),
        ("bad name", "login_name_characters"),
        ("bad-name", "login_name_characters"),
        ("émile", "login_name_characters"),
    ],
)
def test_bad_login_names(name: str, code: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        rules.check_login_name(name)
    assert caught.value.code == code


@pytest.mark.parametrize("password", ["Abcdefg1", "abcdefg1!", "ABCDEFG1!", "Abcdefgh!", "Aa1!Aa1!Aa1!Aa1"])
def test_good_passwords(password: str) -> None:
    assert rules.check_password(password) == password


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("Abc1!", "password_length"),
        ("Abcdefgh1!Abcdef", "password_length"),
        ("Abcd efg1", "password_spaces"),
        ("abcdefgh1", "password_too_simple"),
        ("ABCDEFGHI", "password_too_simple"),
        # Issue 16's reproductions: both were accepted (中文 counted as special, １ as a digit).
        ("abcdef中文1", "password_invalid_character"),
        ("ABCDEFGH１", "password_invalid_character"),
        ("Abcdefg1\x00", "password_invalid_character"),
        ("Abcdefg1\x7f", "password_invalid_character"),
        ("Abcdefg1é", "password_invalid_character"),
        ("Abcdefg1\U00020bb7", "password_invalid_character"),
        ("Abcdefg1\u3000", "password_spaces"),  # an ideographic space is a space
    ],
)
def test_bad_passwords(password: str, code: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        rules.check_password(password)
    assert caught.value.code == code


def test_resident_id_checksum() -> None:
    assert rules.normalise_id_number(IdType.RESIDENT_ID, "11010519491231002x") == "11010519491231002X"
    with pytest.raises(errors.BadRequest):
        rules.normalise_id_number(IdType.RESIDENT_ID, "110105194912310021")


@pytest.mark.parametrize(
    ("kind", "number", "valid"),
    [
        (IdType.PASSPORT, "E12345678", True),
        (IdType.PASSPORT, "E1", False),
        (IdType.HK_MACAU_PERMIT, "H12345678", True),
        (IdType.HK_MACAU_PERMIT, "X12345678", False),
        (IdType.TAIWAN_PERMIT, "12345678", True),
        (IdType.FOREIGN_PERMANENT_RESIDENT, "USA123456789012", True),
        (IdType.FOREIGN_PERMANENT_RESIDENT, "US123", False),
    ],
)
def test_other_id_formats(kind: IdType, number: str, valid: bool) -> None:
    if valid:
        assert rules.normalise_id_number(kind, number) == number
    else:
        with pytest.raises(errors.BadRequest):
            rules.normalise_id_number(kind, number)


def test_names_are_nfc_and_masked() -> None:
    decomposed = "Zoe\u0308"
    assert rules.normalise_name(decomposed) == "Zoë"
    assert rules.mask_name("张三") == "张*"
    assert rules.mask_name("欧阳娜娜") == "欧***"
    assert rules.mask_name("𠮷田") == "𠮷*"
    assert rules.mask_name("李") == "*"


@pytest.mark.parametrize("password", ["abcdefg1!", "Abcdefg!", "A1!\"#$%&'()*+,", "aA1-./:;<=>?@[", "aA1\\]^_`{|}~"])
def test_every_ascii_special_character_counts(password: str) -> None:
    assert rules.check_password(password) == password


@pytest.mark.parametrize(
    "code",
    ["110105", "440106", "441900", "442000", "460400", "620200", "429004", "650102", "540402"],
)  # 朝阳区, 天河区, and 东莞/中山/儋州/嘉峪关 (cities without counties), 仙桃 (directly under the province)
def test_county_level_household_regions(code: str) -> None:
    assert rules.check_household_region(code) == code
    assert rules.divisions()[code].county_level


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("449999", "household_region_unknown"),
        ("110103", "household_region_unknown"),  # abolished in 2010
        ("110101 ", "household_region_format"),
        ("１１０１０５", "household_region_format"),
        ("110100", "household_region_not_county"),
        ("440100", "household_region_not_county"),
        ("440000", "household_region_not_county"),
        ("710000", "household_region_not_county"),  # Taiwan: no mainland household
        ("810000", "household_region_not_county"),
        ("990101", "household_region_unknown"),
    ],
)
def test_household_regions_are_checked_to_the_county(code: str, error: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        rules.check_household_region(code)
    assert caught.value.code == error


def test_the_household_region_is_asked_only_of_a_mainland_household() -> None:
    with pytest.raises(errors.BadRequest) as caught:
        rules.household_region_for(IdType.RESIDENT_ID, None)
    assert caught.value.code == "household_region_required"
    for kind in (IdType.PASSPORT, IdType.HK_MACAU_PERMIT, IdType.TAIWAN_PERMIT, IdType.FOREIGN_PERMANENT_RESIDENT):
        assert rules.household_region_for(kind, None) is None
        with pytest.raises(errors.BadRequest):
            rules.household_region_for(kind, "449999")  # one given is checked all the same
