"""Structured JSON log lines, with phone numbers and NIKs masked on the way out, and the
trace ids that tie each line to the RPC (or worker pass) it was logged for."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from wallet_service.domain.phone import mask_mobile_numbers

# Sixteen digits standing alone look like a NIK (or a card number): mask them.
_SIXTEEN_DIGITS = re.compile(r"(?<![0-9])([0-9]{4})[0-9]{10}([0-9]{2})(?![0-9])")
_EXTRA_FIELDS = (
    "trace_id",
    "method",
    "caller",
    "code",
    "reason",
    "duration_ms",
    "peer",
    "incident",
    "kaspro_request_ids",
)

# W3C Trace Context, version 00: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
# The KasPro request ids one trace keeps for its call-log line: a ride capture sends two
# legs, a retried one a few more; a line must stay short whatever happened.
MAX_KASPRO_REQUEST_IDS = 10


@dataclass(slots=True)
class Trace:
    """The work a log line is part of: one RPC, one worker pass, or the later work on an
    attempt (under the trace id stored with it), and the KasPro requests it caused."""

    trace_id: str
    kaspro_request_ids: list[str] = field(default_factory=list)

    def note_kaspro_request(self, request_id: str) -> None:
        """Keep ``request_id`` for the call-log line (the first MAX_KASPRO_REQUEST_IDS)."""
        ids = self.kaspro_request_ids
        if request_id not in ids and len(ids) < MAX_KASPRO_REQUEST_IDS:
            ids.append(request_id)


# Set by the edge for each RPC, by the workers for each pass and attempt; tasks started
# under it share the same Trace (a copied context holds the same object).
current_trace: ContextVar[Trace | None] = ContextVar("current_trace", default=None)


def new_trace_id() -> str:
    """A random W3C trace id: 32 lower-case hex digits (from os.urandom: distinct across
    forked processes, which a seeded generator would not be)."""
    return os.urandom(16).hex()


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a W3C ``traceparent`` value, or None when it is not a valid one
    (another version, upper-case hex, an all-zero trace or parent id, extra parts)."""
    match = _TRACEPARENT.fullmatch(traceparent.strip(" \t"))
    if match is None or match[1] == _ZERO_TRACE_ID or match[2] == _ZERO_PARENT_ID:
        return None
    return match[1]


def current_trace_id() -> str:
    """The trace id lines are logged under now; "" outside any trace."""
    trace = current_trace.get()
    return "" if trace is None else trace.trace_id


@contextlib.contextmanager
def traced(trace_id: str) -> Iterator[Trace]:
    """Log everything inside the block under ``trace_id``."""
    trace = Trace(trace_id)
    token = current_trace.set(trace)
    try:
        yield trace
    finally:
        current_trace.reset(token)


def mask(text: str) -> str:
    """Mask NIKs first: a NIK may contain a run of digits that looks like a phone number."""
    return mask_mobile_numbers(_SIXTEEN_DIGITS.sub(r"\1**********\2", text))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [mask(v) if isinstance(v, str) else v for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; every text value passes through ``mask``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        for name in _EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = _masked(value)
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


RecordFactory = Callable[..., logging.LogRecord]


def _stamping_trace_ids(make: RecordFactory) -> RecordFactory:
    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        trace = current_trace.get()
        if trace is not None:
            record.trace_id = trace.trace_id
        return record

    stamped.stamps_trace_ids = True  # type: ignore[attr-defined]
    return stamped


def _install_trace_ids() -> None:
    """Stamp every record, of every logger, with the trace id current where it is made:
    a handler may format it later or elsewhere (a queue, pytest's capture), where the
    context of the task that logged it is gone."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "stamps_trace_ids", False):
        logging.setLogRecordFactory(_stamping_trace_ids(factory))


_install_trace_ids()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
