"""NIK (KTP number): the 16-digit layout and the log-safe mask."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_service.domain.nik import mask_nik, nik_problem

DIGITS = "0123456789"


def in_digits(text: str, zero: str) -> str:
    """``text`` with its ASCII digits written in the digit block starting at ``zero``."""
    return "".join(chr(ord(zero) + int(ch)) if ch in "0123456789" else ch for ch in text)


FULLWIDTH_ZERO = "\uff10"
ARABIC_INDIC_ZERO = "\u0660"


def nik(
    *,
    region: str = "317105",
    day: str = "15",
    month: str = "08",
    year: str = "90",
    serial: str = "0001",
) -> str:
    return region + day + month + year + serial


def two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


valid_niks = st.builds(
    lambda province, regency, district, day, month, year, serial: (
        province + regency + district + day + month + year + serial
    ),
    two_digits(1, 99),
    two_digits(1, 99),
    two_digits(1, 99),
    st.one_of(two_digits(1, 31), two_digits(41, 71)),
    two_digits(1, 12),
    two_digits(0, 99),
    st.integers(1, 9999).map(lambda n: f"{n:04d}"),
)


def test_a_well_formed_nik_has_no_problem() -> None:
    assert nik() == "3171051508900001"
    assert nik_problem(nik()) is None


@pytest.mark.parametrize("day", ["01", "02", "15", "30", "31", "41", "42", "55", "70", "71"])
def test_birth_days_of_men_and_women_are_accepted(day: str) -> None:
    assert nik_problem(nik(day=day)) is None


@pytest.mark.parametrize("day", ["00", "32", "39", "40", "72", "80", "99"])
def test_impossible_birth_days_are_refused(day: str) -> None:
    assert nik_problem(nik(day=day)) == "birth day must be 01-31 (or 41-71 for women)"


@pytest.mark.parametrize("month", ["01", "06", "12"])
def test_birth_months_are_accepted(month: str) -> None:
    assert nik_problem(nik(month=month)) is None


@pytest.mark.parametrize("month", ["00", "13", "19", "99"])
def test_impossible_birth_months_are_refused(month: str) -> None:
    assert nik_problem(nik(month=month)) == "birth month must be 01-12"


@pytest.mark.parametrize("year", ["00", "99"])
def test_any_birth_year_is_accepted(year: str) -> None:
    assert nik_problem(nik(year=year)) is None


@pytest.mark.parametrize("serial", ["0001", "0010", "9999"])
def test_serials_are_accepted(serial: str) -> None:
    assert nik_problem(nik(serial=serial)) is None


def test_serial_0000_is_refused() -> None:
    assert nik_problem(nik(serial="0000")) == "serial must not be 0000"


@pytest.mark.parametrize("region", ["001105", "310005", "317100"])
def test_a_region_code_of_00_is_refused(region: str) -> None:
    assert nik_problem(nik(region=region)) == "region code must not be 00"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("317105150890001", id="15-digits"),
        pytest.param("31710515089000011", id="17-digits"),
        pytest.param("", id="empty"),
        pytest.param("31710515089O0001", id="letter-O"),
        pytest.param("3171O51508900001", id="letter-in-region"),
        pytest.param("ABCDEFGHIJKLMNOP", id="all-letters"),
        pytest.param("3171 0515 0890 0001", id="spaces"),
        pytest.param("3171-05-150890-0001", id="dashes"),
        pytest.param(" 3171051508900001", id="leading-space"),
        pytest.param("3171051508900001\n", id="trailing-newline"),
        pytest.param("+3171051508900001", id="plus"),
        pytest.param(in_digits("3171051508900001", FULLWIDTH_ZERO), id="fullwidth-digits"),
        pytest.param(in_digits("3171051508900001", ARABIC_INDIC_ZERO), id="arabic-indic-digits"),
    ],
)
def test_anything_but_sixteen_ascii_digits_is_refused(text: str) -> None:
    assert nik_problem(text) == "must be exactly 16 digits"


@given(valid_niks)
def test_every_structurally_valid_nik_is_accepted(value: str) -> None:
    assert nik_problem(value) is None


@given(st.text(max_size=20))
def test_any_text_gets_an_answer_not_an_exception(text: str) -> None:
    problem = nik_problem(text)
    assert problem is None or problem.startswith(("must", "region", "birth", "serial"))
    if problem is None:
        assert len(text) == 16
        assert text.isascii()
        assert text.isdigit()


def test_mask_nik_keeps_the_region_and_last_two_digits() -> None:
    assert mask_nik("3171051508900001") == "3171**********01"


@pytest.mark.parametrize(
    ("text", "masked"),
    [("", ""), ("1234567", "*******"), ("12345678", "1234**78"), ("123456789", "1234***89")],
)
def test_mask_nik_of_short_text(text: str, masked: str) -> None:
    assert mask_nik(text) == masked


@given(valid_niks)
def test_mask_nik_hides_ten_digits(value: str) -> None:
    masked = mask_nik(value)
    assert len(masked) == 16
    assert masked == value[:4] + "*" * 10 + value[-2:]
    assert value not in masked
    assert value[4:14] not in masked


@given(st.text(alphabet=DIGITS, max_size=30))
def test_mask_nik_keeps_at_most_six_digits(text: str) -> None:
    masked = mask_nik(text)
    assert len(masked) == len(text)
    assert sum(ch.isdigit() for ch in masked) <= 6
