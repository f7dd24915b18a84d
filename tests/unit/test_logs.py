"""JSON log lines: one object a line, the call fields, the trace id, and no phone number or
NIK; W3C traceparent parsing."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wallet_service.domain.nik import mask_nik, nik_problem
from wallet_service.logs import (
    MAX_KASPRO_REQUEST_IDS,
    JsonFormatter,
    Trace,
    current_trace,
    current_trace_id,
    mask,
    new_trace_id,
    trace_id_of,
    traced,
)

DIGITS = "0123456789"

nationals = st.builds(
    lambda second, rest: "8" + second + rest,
    st.sampled_from("12356789"),
    st.text(alphabet=DIGITS, min_size=7, max_size=10),
)


def two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


valid_niks = st.builds(
    lambda *parts: "".join(parts),
    two_digits(1, 99),
    two_digits(1, 99),
    two_digits(1, 99),
    st.one_of(two_digits(1, 31), two_digits(41, 71)),
    two_digits(1, 12),
    two_digits(0, 99),
    st.integers(1, 9999).map(lambda n: f"{n:04d}"),
)


class Captured:
    """A logger whose output goes through JsonFormatter into a buffer."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.logger = logging.getLogger(f"wallet_service.test.{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(self.buffer)
        handler.setFormatter(JsonFormatter())
        self.logger.handlers[:] = [handler]

    def lines(self) -> list[str]:
        # JSON-lines readers split on "\n" only; U+2028 inside a JSON string is legal.
        return self.buffer.getvalue().rstrip("\n").split("\n")

    def only(self) -> dict[str, Any]:
        lines = self.lines()
        assert len(lines) == 1, lines
        line: dict[str, Any] = json.loads(lines[0])
        return line


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    yield capture
    capture.logger.handlers.clear()


def format_record(**fields: Any) -> dict[str, Any]:
    record = logging.makeLogRecord({"name": "wallet_service.calls", "levelname": "INFO", **fields})
    line: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return line


# The line.


def test_a_line_is_one_json_object_with_the_basic_fields(captured: Captured) -> None:
    captured.logger.warning("hello %s", "world")
    line = captured.only()
    assert line["level"] == "WARNING"
    assert line["logger"] == captured.logger.name
    assert line["msg"] == "hello world"
    assert set(line) == {"ts", "level", "logger", "msg"}


def test_the_timestamp_is_utc_with_milliseconds() -> None:
    line = format_record(msg="x", created=1633330830.123456, msecs=123.456)
    assert line["ts"] == "2021-10-04T07:00:30.123Z"


def test_multi_line_messages_stay_on_one_line(captured: Captured) -> None:
    captured.logger.info("first\nsecond\r\nthird\u2028fourth")
    assert len(captured.lines()) == 1
    assert captured.only()["msg"] == "first\nsecond\r\nthird\u2028fourth"


def test_non_ascii_text_is_written_as_is(captured: Captured) -> None:
    captured.logger.info("Zoë paid")
    assert "Zoë paid" in captured.buffer.getvalue()


def test_exceptions_are_one_masked_field(captured: Captured) -> None:
    try:
        raise RuntimeError("KasPro said no to 081234567890 (NIK 3171051508900001)")
    except RuntimeError:
        captured.logger.exception("failed for +6281234567890")
    assert len(captured.lines()) == 1
    line = captured.only()
    assert line["level"] == "ERROR"
    assert line["msg"] == "failed for +628******7890"
    assert "Traceback" in line["exc"]
    assert "RuntimeError: KasPro said no to 0812****7890 (NIK 3171**********01)" in line["exc"]
    assert "81234567890" not in captured.buffer.getvalue()
    assert "3171051508900001" not in captured.buffer.getvalue()


# The call fields.


def test_call_fields_are_copied_and_text_is_masked(captured: Captured) -> None:
    captured.logger.info(
        "call",
        extra={
            "method": "/wallet.v1.AccountService/GetAccount",
            "caller": "app 081234567890",
            "code": "OK",
            "duration_ms": 1.25,
            "peer": "ipv4:127.0.0.1:5555",
            "incident": "abc123def456",
        },
    )
    line = captured.only()
    assert line["method"] == "/wallet.v1.AccountService/GetAccount"
    assert line["caller"] == "app 0812****7890"
    assert line["code"] == "OK"
    assert line["duration_ms"] == 1.25
    assert line["peer"] == "ipv4:127.0.0.1:5555"
    assert line["incident"] == "abc123def456"


def test_missing_or_none_fields_are_left_out(captured: Captured) -> None:
    captured.logger.info("call", extra={"method": "/x", "incident": None})
    assert set(captured.only()) == {"ts", "level", "logger", "msg", "method"}


def test_other_extra_attributes_are_not_logged(captured: Captured) -> None:
    captured.logger.info("call", extra={"mobile_number": "081234567890", "nik": "x"})
    line = captured.only()
    assert "mobile_number" not in line
    assert "nik" not in line
    assert "081234567890" not in captured.buffer.getvalue()


def test_arguments_are_masked_after_formatting(captured: Captured) -> None:
    captured.logger.info("otp for %s%s", "0812", "34567890")
    assert captured.only()["msg"] == "otp for 0812****7890"


# The trace id.

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_a_line_logged_in_a_trace_carries_its_trace_id(captured: Captured) -> None:
    with traced(TRACE_ID):
        captured.logger.info("inside")
    captured.logger.info("after")
    inside, after = (json.loads(line) for line in captured.lines())
    assert inside["trace_id"] == TRACE_ID
    assert "trace_id" not in after


def test_every_logger_gets_the_trace_id(captured: Captured) -> None:
    """Not only the service's own loggers: a library's line is part of the trace too."""
    other = logging.getLogger("some.library")
    other.addHandler(captured.logger.handlers[0])
    other.propagate = False
    try:
        with traced(TRACE_ID):
            other.warning("from a library")
    finally:
        other.handlers.clear()
        other.propagate = True
    assert captured.only()["trace_id"] == TRACE_ID


def test_the_trace_id_is_taken_when_the_line_is_logged_not_when_formatted() -> None:
    """A handler may format a record later (pytest's capture, a queue), outside the trace."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(f"wallet_service.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    with traced(TRACE_ID):
        logger.info("kept for later")
    assert current_trace.get() is None
    assert json.loads(JsonFormatter().format(records[0]))["trace_id"] == TRACE_ID


def test_nested_traces_restore_the_outer_one() -> None:
    with traced("a" * 32) as outer:
        with traced("b" * 32):
            assert current_trace_id() == "b" * 32
        assert current_trace.get() is outer
    assert current_trace_id() == ""


def test_kaspro_request_ids_are_kept_once_each_and_bounded() -> None:
    trace = Trace(TRACE_ID)
    for n in range(MAX_KASPRO_REQUEST_IDS + 5):
        trace.note_kaspro_request(f"REQ{n:013d}")
        trace.note_kaspro_request(f"REQ{n:013d}")
    assert trace.kaspro_request_ids == [f"REQ{n:013d}" for n in range(MAX_KASPRO_REQUEST_IDS)]


def test_the_request_id_list_is_logged_and_masked(captured: Captured) -> None:
    captured.logger.info(
        "call", extra={"kaspro_request_ids": ["ABCDEFGHJKLMNPQR", "for 081234567890"]}
    )
    assert captured.only()["kaspro_request_ids"] == ["ABCDEFGHJKLMNPQR", "for 0812****7890"]


def test_made_up_trace_ids_are_32_hex_digits_and_differ() -> None:
    made = {new_trace_id() for _ in range(100)}
    assert len(made) == 100
    for trace_id in made:
        assert trace_id_of(f"00-{trace_id}-{PARENT_ID}-01") == trace_id


@pytest.mark.parametrize("flags", ["00", "01", "ff"])
def test_a_valid_traceparent_gives_its_trace_id(flags: str) -> None:
    assert trace_id_of(f"00-{TRACE_ID}-{PARENT_ID}-{flags}") == TRACE_ID


def test_surrounding_blanks_are_allowed() -> None:
    assert trace_id_of(f" 00-{TRACE_ID}-{PARENT_ID}-01\t") == TRACE_ID


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", id="all-zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="all-zero-parent-id"),
        pytest.param(f"01-{TRACE_ID}-{PARENT_ID}-01", id="another-version"),
        pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01", id="forbidden-version"),
        pytest.param(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", id="upper-case"),
        pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", id="short-trace-id"),
        pytest.param(f"00-{TRACE_ID}0-{PARENT_ID}-01", id="long-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01", id="short-parent-id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-1", id="short-flags"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-extra", id="extra-part"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01", id="not-hex"),
        pytest.param(f"00_{TRACE_ID}_{PARENT_ID}_01", id="wrong-separator"),
        pytest.param(TRACE_ID, id="bare-trace-id"),
        pytest.param("", id="empty"),
    ],
)
def test_an_invalid_traceparent_gives_none(value: str) -> None:
    assert trace_id_of(value) is None


# Masking.


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to 0812345678", "to 0812**5678"),
        ("to 081234567890", "to 0812****7890"),
        ("to 0812345678901", "to 0812*****8901"),
        ("to 62812345678", "to 6281***5678"),
        ("to 6281234567890", "to 6281*****7890"),
        ("to +6281234567890", "to +628******7890"),
        ("to +62812345678901", "to +628*******8901"),
        ("mobileNumber=081234567890&otp=123456", "mobileNumber=0812****7890&otp=123456"),
        ('{"mobileNumber":"6281234567890"}', '{"mobileNumber":"6281*****7890"}'),
        ("nik=3171051508900001", "nik=3171**********01"),
        ("NIK 3171051508900001.", "NIK 3171**********01."),
        ("card 4111111111111111 ok", "card 4111**********11 ok"),
        ("both 081234567890 3171051508900001", "both 0812****7890 3171**********01"),
    ],
)
def test_mask(text: str, masked: str) -> None:
    assert mask(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "amount=150000",
        "ride 42 took 1234 ms",
        "15 digits 317105150890001",
        "17 digits 31710515089000011",
        "084 is not mobile: 0841234567890",
        "request OLSFQ20220214101951114",
        "",
    ],
)
def test_mask_leaves_other_numbers_alone(text: str) -> None:
    assert mask(text) == text


@pytest.mark.parametrize(
    "nik",
    [
        pytest.param("3171081505900001", id="district-08-looks-like-08-number"),
        pytest.param("3171050811900001", id="born-8-november-looks-like-08-number"),
        pytest.param("3162811505900001", id="regency-62-looks-like-628-number"),
    ],
)
def test_a_nik_that_contains_a_mobile_number_pattern_is_masked_as_a_nik(nik: str) -> None:
    assert nik_problem(nik) is None
    assert mask(f"NIK {nik}") == f"NIK {mask_nik(nik)}"


@given(valid_niks, st.sampled_from(["", "nik=", "NIK ", '"idCardNumber": "']))
@example("3171081505900001", "nik=")  # about one NIK in a hundred has district 08
def test_a_nik_standing_alone_shows_only_region_and_last_two_digits(nik: str, before: str) -> None:
    masked = mask(f"{before}{nik} ok")
    assert masked == f"{before}{mask_nik(nik)} ok"


def _does_not_start_with_a_digit(text: str) -> bool:
    return not text or text[0] not in DIGITS


@given(
    nationals,
    st.sampled_from(["0", "62", "+62"]),
    st.text(max_size=20),
    st.text(max_size=20).filter(_does_not_start_with_a_digit),
)
def test_mask_of_text_with_a_number_never_contains_the_number(
    national: str, prefix: str, before: str, after: str
) -> None:
    number = prefix + national
    masked = mask(before + number + after)
    assert number not in masked
    assert national not in masked


@given(st.text(max_size=60))
def test_mask_is_idempotent_and_keeps_text_without_digits(text: str) -> None:
    once = mask(text)
    assert mask(once) == once
    if not any(ch in DIGITS for ch in text):
        assert once == text
