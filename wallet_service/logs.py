"""Structured JSON log lines, with phone numbers and NIKs masked on the way out."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from wallet_service.domain.phone import mask_mobile_numbers

# Sixteen digits standing alone look like a NIK (or a card number): mask them.
_SIXTEEN_DIGITS = re.compile(r"(?<![0-9])([0-9]{4})[0-9]{10}([0-9]{2})(?![0-9])")
_EXTRA_FIELDS = ("method", "caller", "code", "duration_ms", "peer", "incident")


def mask(text: str) -> str:
    """Mask NIKs first: a NIK may contain a run of digits that looks like a phone number."""
    return mask_mobile_numbers(_SIXTEEN_DIGITS.sub(r"\1**********\2", text))


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
                line[name] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
