"""The fault table: which path misbehaves next, how, and how many more times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

FaultKind = Literal["garbage", "http_500", "delay", "unknown_code"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

GARBAGE_BODY = "<html>oops</html>"
UNKNOWN_CODE = 987654


@dataclass
class Fault:
    """A misbehaviour armed for the next `remaining` requests to `path`."""

    path: str
    kind: FaultKind
    remaining: int
    delay_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "delaySeconds": self.delay_seconds,
            "times": self.remaining,
        }


class FaultTable:
    """At most one armed fault per path; arming a path again replaces its fault."""

    def __init__(self) -> None:
        self._by_path: dict[str, Fault] = {}

    def arm(self, fault: Fault) -> None:
        self._by_path[fault.path] = fault

    def take(self, path: str) -> Fault | None:
        """The fault for this request to `path`, counting it as used; None to answer normally."""
        fault = self._by_path.get(path)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self._by_path[path]
        return fault

    def clear(self) -> None:
        self._by_path.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [fault.to_json() for fault in self._by_path.values()]
