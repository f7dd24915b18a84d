"""Indonesian mobile numbers: the three accepted forms, one canonical value, masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_service.domain.phone import (
    InvalidMobileNumber,
    MobileNumber,
    mask_mobile_numbers,
    parse_mobile_number,
)

DIGITS = "0123456789"


def in_digits(text: str, zero: str) -> str:
    """``text`` with its ASCII digits written in the digit block starting at ``zero``."""
    return "".join(chr(ord(zero) + int(ch)) if ch in "0123456789" else ch for ch in text)


FULLWIDTH_ZERO = "\uff10"
ARABIC_INDIC_ZERO = "\u0660"
EXTENDED_ARABIC_INDIC_ZERO = "\u06f0"
DEVANAGARI_ZERO = "\u0966"

# National significant numbers: 8, then 1-3 or 5-9, then 7 to 10 digits (KASPRO.md).
nationals = st.builds(
    lambda second, rest: "8" + second + rest,
    st.sampled_from("12356789"),
    st.text(alphabet=DIGITS, min_size=7, max_size=10),
)


def forms(national: str) -> list[str]:
    return ["0" + national, "62" + national, "+62" + national]


@pytest.mark.parametrize(
    ("text", "national"),
    [
        # 08… is 10 to 13 digits long.
        ("0812345678", "812345678"),
        ("08123456789", "8123456789"),
        ("081234567890", "81234567890"),
        ("0812345678901", "812345678901"),
        # 628… is 11 to 14 digits long.
        ("62812345678", "812345678"),
        ("6281234567890", "81234567890"),
        ("62812345678901", "812345678901"),
        # +628… is the same with a plus.
        ("+62812345678", "812345678"),
        ("+6281234567890", "81234567890"),
        ("+62812345678901", "812345678901"),
    ],
)
def test_accepted_forms_parse_to_the_national_digits(text: str, national: str) -> None:
    assert parse_mobile_number(text) == MobileNumber(national)


@pytest.mark.parametrize("second", list("12356789"))
def test_every_allowed_second_digit_is_accepted(second: str) -> None:
    assert parse_mobile_number(f"08{second}12345678").national == f"8{second}12345678"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("081234567", id="9-digit-08"),
        pytest.param("08123456789012", id="14-digit-08"),
        pytest.param("6281234567", id="10-digit-628"),
        pytest.param("628123456789012", id="15-digit-628"),
        pytest.param("+6281234567", id="short-plus-628"),
        pytest.param("+628123456789012", id="long-plus-628"),
        pytest.param("0841234567890", id="084-is-not-mobile"),
        pytest.param("6284123456789", id="6284-is-not-mobile"),
        pytest.param("+6284123456789", id="plus-6284-is-not-mobile"),
        pytest.param("0801234567890", id="080-is-not-mobile"),
        pytest.param("0212345678", id="jakarta-landline"),
        pytest.param("0712345678901", id="07-prefix"),
        pytest.param("81234567890", id="no-prefix"),
        pytest.param("+081234567890", id="plus-local"),
        pytest.param("6208123456789", id="62-then-0"),
        pytest.param("+62081234567890", id="plus-62-then-0"),
        pytest.param("0062812345678", id="international-00"),
        pytest.param("+6581234567", id="singapore"),
        pytest.param("", id="empty"),
        pytest.param("0", id="zero"),
        pytest.param("+62", id="bare-country-code"),
        pytest.param(" 081234567890", id="leading-space"),
        pytest.param("081234567890 ", id="trailing-space"),
        pytest.param("081234567890\n", id="trailing-newline"),
        pytest.param("0812 3456 7890", id="spaces"),
        pytest.param("0812-3456-7890", id="dashes"),
        pytest.param("+62 812 3456 7890", id="spaced-e164"),
        pytest.param("08123456789a", id="letter"),
        pytest.param(in_digits("081234567890", FULLWIDTH_ZERO), id="fullwidth-digits"),
        pytest.param(in_digits("081234567890", ARABIC_INDIC_ZERO), id="arabic-indic-digits"),
        pytest.param(
            in_digits("081234567890", EXTENDED_ARABIC_INDIC_ZERO),
            id="extended-arabic-indic-digits",
        ),
        pytest.param(
            "08" + in_digits("1234567890", DEVANAGARI_ZERO), id="devanagari-digits-after-prefix"
        ),
        pytest.param(
            "+62" + in_digits("81234567890", FULLWIDTH_ZERO), id="fullwidth-after-plus-62"
        ),
        pytest.param("0812345678\u00b9", id="superscript-digit"),
    ],
)
def test_rejected_spellings(text: str) -> None:
    with pytest.raises(InvalidMobileNumber):
        parse_mobile_number(text)


def test_invalid_mobile_number_is_a_value_error() -> None:
    assert issubclass(InvalidMobileNumber, ValueError)


@pytest.mark.parametrize(
    "national", ["", "8", "84123456789", "8012345678", "81234567", "8123456789012", "081234567"]
)
def test_constructor_rejects_bad_national_digits(national: str) -> None:
    with pytest.raises(InvalidMobileNumber):
        MobileNumber(national)


def test_the_three_views_of_one_number() -> None:
    number = parse_mobile_number("+6281234567890")
    assert number.canonical == "6281234567890"
    assert number.local == "081234567890"
    assert number.masked == "0812****7890"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("0812345678", "0812**5678"),
        ("08123456789", "0812***6789"),
        ("081234567890", "0812****7890"),
        ("0812345678901", "0812*****8901"),
    ],
)
def test_masked_keeps_four_digits_each_side(text: str, masked: str) -> None:
    assert parse_mobile_number(text).masked == masked


def test_str_and_repr_do_not_reveal_the_number() -> None:
    number = parse_mobile_number("081234567890")
    assert str(number) == "0812****7890"
    assert "81234567890" not in repr(number)
    assert "81234567890" not in f"{number}"


def test_numbers_are_values() -> None:
    assert parse_mobile_number("081234567890") == parse_mobile_number("+6281234567890")
    assert len({parse_mobile_number(f) for f in forms("81234567890")}) == 1


@given(nationals)
def test_every_form_round_trips_to_the_same_number(national: str) -> None:
    number = MobileNumber(national)
    parsed = {parse_mobile_number(text) for text in forms(national)}
    assert parsed == {number}
    assert parse_mobile_number(number.local) == number
    assert parse_mobile_number(number.canonical) == number
    assert parse_mobile_number("+" + number.canonical) == number
    assert number.local == "0" + national
    assert number.canonical == "62" + national


@given(nationals)
def test_masked_form_never_contains_the_number(national: str) -> None:
    number = MobileNumber(national)
    masked = number.masked
    assert len(masked) == len(number.local)
    assert masked.count("*") >= 2
    for full in (national, number.local, number.canonical, "+" + number.canonical):
        assert full not in masked
    assert national not in str(number)
    assert national not in repr(number)


@given(
    st.sampled_from("04"),
    st.text(alphabet=DIGITS, min_size=7, max_size=10),
)
def test_second_digit_0_or_4_is_never_mobile(second: str, rest: str) -> None:
    for text in forms("8" + second + rest):
        with pytest.raises(InvalidMobileNumber):
            parse_mobile_number(text)


@given(
    st.sampled_from("12356789"),
    st.one_of(
        st.text(alphabet=DIGITS, max_size=6), st.text(alphabet=DIGITS, min_size=11, max_size=14)
    ),
)
def test_wrong_lengths_are_never_mobile(second: str, rest: str) -> None:
    for text in forms("8" + second + rest):
        with pytest.raises(InvalidMobileNumber):
            parse_mobile_number(text)


@given(st.text())
def test_any_text_parses_only_from_one_of_its_own_forms(text: str) -> None:
    try:
        number = parse_mobile_number(text)
    except InvalidMobileNumber:
        return
    assert text in (number.local, number.canonical, "+" + number.canonical)


@given(nationals, st.sampled_from([0, 1, 2]))
def test_mask_mobile_numbers_hides_a_number_standing_alone(national: str, form: int) -> None:
    text = forms(national)[form]
    masked = mask_mobile_numbers(f"calling {text} now")
    assert national not in masked
    assert masked.startswith("calling ")
    assert masked.endswith(" now")
    assert "*" in masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to 081234567890.", "to 0812****7890."),
        ("to 6281234567890.", "to 6281*****7890."),
        ("to +6281234567890.", "to +628******7890."),
        ("mobileNumber=0812345678&x=1", "mobileNumber=0812**5678&x=1"),
        ('{"mobileNumber": "081234567890"}', '{"mobileNumber": "0812****7890"}'),
        ("a 081234567890 and 082198765432", "a 0812****7890 and 0821****5432"),
    ],
)
def test_mask_mobile_numbers_in_free_text(text: str, masked: str) -> None:
    assert mask_mobile_numbers(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "no numbers here",
        "0841234567890",  # 084 is not a mobile prefix
        "081234567",  # too short
        "08123456789012345",  # a longer digit run is not a number
        "amount 150000 IDR",
        "",
    ],
)
def test_mask_mobile_numbers_leaves_other_text_alone(text: str) -> None:
    assert mask_mobile_numbers(text) == text
