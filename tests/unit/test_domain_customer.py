"""Registration fields: names, email, free text and postal code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_service.domain.customer import (
    NAME_MAX,
    email_problem,
    name_problem,
    postal_code_problem,
    text_problem,
)

ONLY_NAME_CHARACTERS = "may contain only letters, spaces, apostrophes, dots and hyphens"


def in_digits(text: str, zero: str) -> str:
    """``text`` with its ASCII digits written in the digit block starting at ``zero``."""
    return "".join(chr(ord(zero) + int(ch)) if ch in "0123456789" else ch for ch in text)


FULLWIDTH_ZERO = "\uff10"
ARABIC_INDIC_ZERO = "\u0660"

# Names.


@pytest.mark.parametrize(
    "name",
    [
        "Budi",
        "Siti Nurhaliza",
        "Muhammad S.",
        "O'Brien",
        "Jean-Luc",
        "Ni Made",
        "A",
        "Zoë",
        "Zoe\u0308",  # e + combining diaeresis
        "José María",
        "Nguyễn",
        "Ṣāliḥ",
        "محمد",
        "王小明",
        "Дмитрий",
        "x" * NAME_MAX,
    ],
)
def test_acceptable_names(name: str) -> None:
    assert name_problem(name, required=True) is None


def test_an_empty_name_is_a_problem_only_when_required() -> None:
    assert name_problem("", required=True) == "is required"
    assert name_problem("", required=False) is None


def test_names_are_at_most_fifty_characters() -> None:
    assert NAME_MAX == 50
    assert name_problem("x" * 51, required=False) == "must be at most 50 characters"


@pytest.mark.parametrize("name", [" Budi", "Budi ", "Budi  Santoso", "\tBudi", "Budi\n", " "])
def test_names_with_stray_spaces_are_refused(name: str) -> None:
    assert name_problem(name, required=True) == (
        "must not start or end with spaces or contain double spaces"
    )


@pytest.mark.parametrize(
    "name",
    [
        "Budi2",
        "Budi_Santoso",
        "Budi@home",
        "Budi,Santoso",
        "Budi\u00a0Santoso",  # no-break space
        "Budi\tSantoso",
        "Budi\u200bSantoso",  # zero-width space
        "Budi\u202eSantoso",  # right-to-left override
        "Budi\x00",
        "Budi 😀",
        "Budi" + in_digits("1", ARABIC_INDIC_ZERO),
    ],
)
def test_names_with_other_characters_are_refused(name: str) -> None:
    assert name_problem(name, required=False) == ONLY_NAME_CHARACTERS


@pytest.mark.parametrize("name", [".", "-", "'", ". -", "\u0301"])
def test_a_name_needs_a_letter(name: str) -> None:
    assert name_problem(name, required=True) == "must contain a letter"


@given(st.text(max_size=60))
def test_name_problem_answers_any_text(text: str) -> None:
    problem = name_problem(text, required=True)
    if problem is None:
        assert 1 <= len(text) <= NAME_MAX
        assert text == text.strip()
        assert not any(ch.isdigit() for ch in text)


# Email.


@pytest.mark.parametrize(
    "email",
    [
        "",
        "name@example.com",
        "a@b.co",
        "first.last+tag@sub.example.co.id",
        "x_y-z@example-host.id",
        "o'brien@example.com",
        "1234@example.com",
    ],
)
def test_acceptable_emails(email: str) -> None:
    assert email_problem(email) is None


@pytest.mark.parametrize(
    "email",
    [
        "name",
        "name@",
        "@example.com",
        "name@example",  # a dot in the domain is required
        "name@@example.com",
        "name @example.com",
        "name@exa mple.com",
        "name@-example.com",
        "name@example-.com",
        "name@example..com",
        "name@example.com.",
        "nämé@example.com",
        "name@exämple.com",
        "name@example.com\n",
        " name@example.com",
        "name@" + "a" * 64 + ".com",  # a domain label is at most 63 characters
    ],
)
def test_malformed_emails_are_refused(email: str) -> None:
    assert email_problem(email) == "must be an email address like name@example.com"


def test_emails_are_at_most_254_characters() -> None:
    domain = "@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".id"
    at_limit = "n" * (254 - len(domain)) + domain
    assert len(at_limit) == 254
    assert email_problem(at_limit) is None
    assert email_problem("n" + at_limit) == "must be at most 254 characters"


# Free text.


@pytest.mark.parametrize(
    "text",
    ["", "Jl. Sudirman No. 1, RT 01/RW 02", "Daerah Khusus Ibukota Jakarta", "Café — №5", "東京"],
)
def test_acceptable_free_text(text: str) -> None:
    assert text_problem(text, max_length=100) is None


def test_free_text_length_limit_is_inclusive() -> None:
    assert text_problem("x" * 10, max_length=10) is None
    assert text_problem("x" * 11, max_length=10) == "must be at most 10 characters"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("line\nbreak", id="newline"),
        pytest.param("tab\there", id="tab"),
        pytest.param("nul\x00", id="nul"),
        pytest.param("esc\x1b[31m", id="ansi-escape"),
        pytest.param("del\x7f", id="delete"),
        pytest.param("zero\u200bwidth", id="zero-width-space"),
        pytest.param("rtl\u202eoverride", id="bidi-override"),
        pytest.param("bom\ufeff", id="byte-order-mark"),
        pytest.param("lone\ud800surrogate", id="surrogate"),
        pytest.param("private\ue000use", id="private-use"),
        pytest.param("unassigned\u0378", id="unassigned"),
    ],
)
def test_control_and_invisible_characters_are_refused(text: str) -> None:
    assert text_problem(text, max_length=100) == "must not contain control or invisible characters"


# Postal code.


@pytest.mark.parametrize("code", ["", "10110", "00000", "99999"])
def test_acceptable_postal_codes(code: str) -> None:
    assert postal_code_problem(code) is None


@pytest.mark.parametrize(
    "code",
    [
        "1011",
        "101100",
        "1011a",
        " 10110",
        "10110 ",
        "10-110",
        in_digits("10110", FULLWIDTH_ZERO),
        in_digits("10110", ARABIC_INDIC_ZERO),
    ],
)
def test_postal_codes_are_five_ascii_digits(code: str) -> None:
    assert postal_code_problem(code) == "must be 5 digits"
