"""Fault injection: rules per path, scripted chains per requestId, and what fired.

A *rule* names a path (or `*`), a kind, a probability and how many more times it may fire.
Every partner call that passes authentication asks the table for a decision: a scripted
step for its requestId if one is waiting, else the first request rule (in the order armed)
that matches its path, has fires left and wins its draw. Callback rules are asked once
per transaction that will be called back (an async transfer when it is accepted, a top-up
when it is credited). Draws come from one generator seeded by the fault seed, so the same
rules and the same sequence of requests give the same faults, run after run.

What each kind does is carried out by the endpoints (partner.py, payments.py) and the
settlement (settlement.py); this module only decides and counts. See docs/sandbox.md § Faults.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, get_args

from kaspro_sandbox.paths import (
    ASYNC_PATHS,
    FAULTABLE_PATHS,
    TOPUP_CONTROL_PATH,
    TRANSFER_PATHS,
)

RequestKind = Literal[
    "latency",
    "delay",
    "http_500",
    "http_502",
    "http_503",
    "reset",
    "timeout_before",
    "timeout_after",
    "garbage",
    "unknown_code",
    "in_process_forever",
]
CallbackKind = Literal[
    "callback_late",
    "callback_duplicate",
    "callback_reorder",
    "callback_unsigned",
    "callback_bad_signature",
    "callback_drop",
]
FaultKind = RequestKind | CallbackKind
StepKind = Literal[
    "latency",
    "http_500",
    "http_502",
    "http_503",
    "reset",
    "timeout_before",
    "timeout_after",
    "garbage",
    "unknown_code",
    "in_process",
    "success",
    "fail",
]

REQUEST_KINDS: Final[tuple[str, ...]] = get_args(RequestKind)
CALLBACK_KINDS: Final[tuple[str, ...]] = get_args(CallbackKind)
FAULT_KINDS: Final[tuple[str, ...]] = (*REQUEST_KINDS, *CALLBACK_KINDS)
STEP_KINDS: Final[tuple[str, ...]] = get_args(StepKind)
STEP_ALIASES: Final[dict[str, str]] = {"timeout": "timeout_after"}
# Script steps that are not faults (not counted in the stats).
NEUTRAL_STEPS: Final = frozenset({"success"})
# What the stats count: every fault kind and the script-only fault steps.
COUNTED_KINDS: Final[tuple[str, ...]] = (*FAULT_KINDS, "in_process", "fail")

# Kinds that replace the answer; the request is not carried out unless afterExecution.
ANSWERING_KINDS: Final = frozenset(
    {"http_500", "http_502", "http_503", "reset", "garbage", "unknown_code"}
)
# Kinds (and steps) whose request is never carried out.
NOT_EXECUTED_KINDS: Final = frozenset({*ANSWERING_KINDS, "timeout_before"})

# How long a kind waits when the rule or step does not say (seconds).
DEFAULT_WAIT_SECONDS: Final[dict[str, float]] = {
    "timeout_before": 60.0,
    "timeout_after": 60.0,
    "latency": 1.0,
    "callback_late": 5.0,
}
DEFAULT_COPIES: Final = 2

GARBAGE_BODY: Final = '{"responseId":"OLSFQ","code":0,"message":"Berhasil","data":{"reffId":'
UNKNOWN_CODE: Final = 987654
TOPUP_ORIGIN: Final = TOPUP_CONTROL_PATH
ANY_PATH: Final = "*"

_RULE_FIELDS: Final = frozenset(
    {
        "path",
        "kind",
        "probability",
        "times",
        "delaySeconds",
        "jitterSeconds",
        "copies",
        "afterExecution",
    }
)
# Shown by GET /_sandbox/faults; accepted (and ignored) so a listing can be armed again.
_READ_ONLY_FIELDS: Final = frozenset({"id", "remaining", "matched", "fired"})
_SCRIPT_FIELDS: Final = frozenset({"requestId", "steps"})


class FaultSpecError(ValueError):
    """A rule or script that cannot be armed; the message says why."""


def _paths_for(kind: str) -> tuple[str, ...]:
    """The paths a rule of `kind` can act on."""
    if kind == "in_process_forever":
        return TRANSFER_PATHS
    if kind == "callback_reorder":
        return ASYNC_PATHS  # a top-up has no earlier state to resend
    if kind in CALLBACK_KINDS:
        return (*ASYNC_PATHS, TOPUP_ORIGIN)
    return FAULTABLE_PATHS


def _number(spec: Mapping[str, Any], name: str, default: float) -> float:
    value = spec.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultSpecError(f"{name} must be a number")
    if value < 0:
        raise FaultSpecError(f"{name} must be a non-negative number")
    return float(value)


@dataclass
class FaultRule:
    """One armed rule and what it has done: `matched` requests drew for it, `fired` got it."""

    id: int
    path: str
    kind: FaultKind
    probability: float = 1.0
    times: int | None = 1
    delay_seconds: float = 0.0
    jitter_seconds: float = 0.0
    copies: int = DEFAULT_COPIES
    after_execution: bool = False
    remaining: int | None = field(default=None, init=False)
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.remaining = self.times

    @property
    def is_callback(self) -> bool:
        return self.kind in CALLBACK_KINDS

    def applies_to(self, path: str) -> bool:
        """Whether a request to `path` (or a callback from it) is this rule's business."""
        if self.remaining == 0:
            return False
        return (self.path == ANY_PATH or self.path == path) and path in _paths_for(self.kind)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.id,
            "path": self.path,
            "kind": self.kind,
            "probability": self.probability,
            "times": self.times,
            "remaining": self.remaining,
            "delaySeconds": self.delay_seconds,
            "jitterSeconds": self.jitter_seconds,
        }
        if self.kind == "callback_duplicate":
            document["copies"] = self.copies
        if self.kind in ANSWERING_KINDS:
            document["afterExecution"] = self.after_execution
        document["matched"] = self.matched
        document["fired"] = self.fired
        return document


def rule_from_json(spec: Mapping[str, Any], rule_id: int) -> FaultRule:
    """A rule from its JSON form (control API, `--faults` file, SandboxConfig.faults).

    `times` defaults to 1 without a `probability` (the one-shot form) and to null
    (unlimited) with one.
    """
    unknown = sorted(set(spec) - _RULE_FIELDS - _READ_ONLY_FIELDS)
    if unknown:
        raise FaultSpecError(f"unknown fields: {', '.join(unknown)}")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    paths = _paths_for(kind)
    path = spec.get("path")
    if path != ANY_PATH and path not in paths:
        raise FaultSpecError(f"path must be * or one of {', '.join(paths)} for {kind}")
    probability = _number(spec, "probability", 1.0)
    if probability > 1:
        raise FaultSpecError("probability must be between 0 and 1")
    default_times = 1 if spec.get("probability") is None else None
    times = spec.get("times", default_times)
    if times is not None and (not isinstance(times, int) or isinstance(times, bool)):
        raise FaultSpecError("times must be an integer or null")
    if times is not None and times < 1:
        raise FaultSpecError("times must be at least 1 (null: no limit)")
    if kind == "delay" and spec.get("delaySeconds") is None:
        raise FaultSpecError("delaySeconds is required for a delay")
    delay = _number(spec, "delaySeconds", DEFAULT_WAIT_SECONDS.get(kind, 0.0))
    jitter = _number(spec, "jitterSeconds", 0.0)
    copies = spec.get("copies", DEFAULT_COPIES)
    if kind != "callback_duplicate" and "copies" in spec:
        raise FaultSpecError("copies is only for callback_duplicate")
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 2:
        raise FaultSpecError("copies must be an integer of at least 2")
    after_execution = spec.get("afterExecution", False)
    if not isinstance(after_execution, bool):
        raise FaultSpecError("afterExecution must be true or false")
    if after_execution and kind not in ANSWERING_KINDS:
        raise FaultSpecError(f"afterExecution is only for {', '.join(sorted(ANSWERING_KINDS))}")
    fault_kind: FaultKind = kind
    return FaultRule(
        id=rule_id,
        path=path,
        kind=fault_kind,
        probability=probability,
        times=times,
        delay_seconds=delay,
        jitter_seconds=jitter,
        copies=copies,
        after_execution=after_execution,
    )


@dataclass(frozen=True)
class ScriptStep:
    """One step of a script: what happens to the call that consumes it, after `wait_seconds`."""

    kind: StepKind
    wait_seconds: float
    explicit_wait: bool = False

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.wait_seconds:g}" if self.explicit_wait else self.kind


def step_from_text(text: object) -> ScriptStep:
    """`kind` or `kind:seconds`, e.g. `timeout_after:0.2`; `timeout` means `timeout_after`."""
    if not isinstance(text, str) or not text.strip():
        raise FaultSpecError("each step must be a non-empty string")
    name, _, seconds = text.strip().partition(":")
    name = STEP_ALIASES.get(name.strip(), name.strip())
    if name not in STEP_KINDS:
        raise FaultSpecError(
            f"unknown step {text!r}: steps are {', '.join([*STEP_KINDS, *STEP_ALIASES])}"
        )
    wait = DEFAULT_WAIT_SECONDS.get(name, 0.0)
    if seconds:
        try:
            wait = float(seconds)
        except ValueError:
            raise FaultSpecError(f"bad seconds in step {text!r}") from None
        if not (math.isfinite(wait) and wait >= 0):
            raise FaultSpecError(f"bad seconds in step {text!r}")
    step_kind: StepKind = name  # type: ignore[assignment]  # checked against STEP_KINDS
    return ScriptStep(step_kind, wait, explicit_wait=bool(seconds))


@dataclass
class Script:
    """The steps waiting for one requestId, consumed one per call or status inquiry."""

    request_id: str
    steps: list[ScriptStep]
    used: int = 0

    @property
    def pending(self) -> bool:
        return self.used < len(self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "steps": [step.text for step in self.steps],
            "used": self.used,
            "next": self.steps[self.used].text if self.pending else None,
        }


def script_from_json(spec: Mapping[str, Any]) -> Script:
    """`{"requestId": "…", "steps": ["timeout_after", "in_process", "success"]}`; the steps
    may also be one string, `"timeout_after|in_process|success"`.
    """
    unknown = sorted(set(spec) - _SCRIPT_FIELDS)
    if unknown:
        raise FaultSpecError(f"unknown fields: {', '.join(unknown)}")
    request_id = spec.get("requestId")
    if not isinstance(request_id, str) or not request_id or request_id != request_id.strip():
        raise FaultSpecError("requestId must be a non-empty string without spaces")
    raw_steps = spec.get("steps")
    if isinstance(raw_steps, str):
        raw_steps = raw_steps.split("|")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise FaultSpecError('steps must be a non-empty list or a string like "a|b|c"')
    return Script(request_id, [step_from_text(step) for step in raw_steps])


@dataclass(frozen=True)
class Injection:
    """What happens to one request: a rule's kind or a script step, after `wait_seconds`."""

    kind: str
    wait_seconds: float = 0.0
    after_execution: bool = False
    rule_id: int | None = None  # None: a script step
    step: str | None = None  # the step's text, for scripted injections

    @property
    def executes(self) -> bool:
        """Whether the request is carried out (money moved, customer registered, …)."""
        return self.kind not in NOT_EXECUTED_KINDS or self.after_execution

    @property
    def fault(self) -> str | None:
        """The fault's kind for the request log; None for a neutral step (`success`)."""
        return None if self.kind in NEUTRAL_STEPS else self.kind


@dataclass(frozen=True)
class CallbackFault:
    """How the callbacks of one transaction misbehave (decided when it was accepted)."""

    kind: CallbackKind
    wait_seconds: float = 0.0
    copies: int = DEFAULT_COPIES
    rule_id: int = 0


class FaultTable:
    """Armed rules, scripts by requestId, the seeded generator and the counters.

    `rules` are armed at the start and again after every `reset()`.
    """

    def __init__(self, seed: int | None = None, rules: Iterable[Mapping[str, Any]] = ()) -> None:
        self.seed = seed
        self._initial: list[FaultRule] = []
        for number, spec in enumerate(rules, start=1):
            if not isinstance(spec, Mapping):
                raise FaultSpecError(f"fault rule {number}: not a JSON object")
            try:
                self._initial.append(rule_from_json(spec, number))
            except FaultSpecError as exc:
                raise FaultSpecError(f"fault rule {number}: {exc}") from None
        self.rules: list[FaultRule] = []
        self.scripts: dict[str, Script] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the start: the initial rules with fresh counters, no scripts, no stats,
        the generator reseeded.
        """
        # replace() copies the init fields only: the counters start afresh.
        self.rules = [replace(rule) for rule in self._initial]
        self._next_id = len(self._initial) + 1
        self.scripts.clear()
        self.rng = random.Random(self.seed)
        self.clear_stats()

    def clear_stats(self) -> None:
        self.requests = 0
        self.callbacks = 0
        self.script_steps = 0
        self.by_kind: dict[str, int] = dict.fromkeys(COUNTED_KINDS, 0)
        self.by_path: dict[str, dict[str, int]] = {}

    # rules

    def arm(self, spec: Mapping[str, Any]) -> FaultRule:
        """Add a rule; one with the same path and kind as an armed one replaces it in place."""
        rule = rule_from_json(spec, self._next_id)
        self._next_id += 1
        for index, armed in enumerate(self.rules):
            if (armed.path, armed.kind) == (rule.path, rule.kind):
                self.rules[index] = rule
                return rule
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> FaultRule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                self.rules.remove(rule)
                return rule
        return None

    def clear(self) -> None:
        """Disarm every rule and script (the counters stay)."""
        self.rules.clear()
        self.scripts.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.rules]

    # scripts

    def add_script(self, spec: Mapping[str, Any]) -> Script:
        """Arm a script for a requestId, replacing any it had."""
        script = script_from_json(spec)
        self.scripts[script.request_id] = script
        return script

    def scripted(self, request_id: str) -> bool:
        """Whether a script still has steps for this requestId."""
        script = self.scripts.get(request_id)
        return script is not None and script.pending

    def scripts_json(self) -> list[dict[str, Any]]:
        return [script.to_json() for script in self.scripts.values()]

    # decisions

    def _draw(self, rule: FaultRule) -> bool:
        rule.matched += 1
        if rule.probability <= 0:
            return False
        if rule.probability < 1 and self.rng.random() >= rule.probability:
            return False
        rule.fired += 1
        if rule.remaining is not None:
            rule.remaining -= 1
        return True

    def _wait(self, rule: FaultRule) -> float:
        jitter = self.rng.uniform(0, rule.jitter_seconds) if rule.jitter_seconds > 0 else 0.0
        return rule.delay_seconds + jitter

    def _count(self, path: str, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        per_path = self.by_path.setdefault(path, {})
        per_path[kind] = per_path.get(kind, 0) + 1

    def decide(self, path: str, request_id: str | None = None) -> Injection | None:
        """The fault for this request to `path`, counted as used; None to answer normally.

        A script step for `request_id` comes first (and then no rule is consulted).
        """
        self.requests += 1
        script = self.scripts.get(request_id) if request_id is not None else None
        if script is not None and script.pending:
            step = script.steps[script.used]
            script.used += 1
            self.script_steps += 1
            if step.kind not in NEUTRAL_STEPS:
                self._count(path, step.kind)
            return Injection(kind=step.kind, wait_seconds=step.wait_seconds, step=step.text)
        for rule in self.rules:
            if rule.is_callback or not rule.applies_to(path) or not self._draw(rule):
                continue
            self._count(path, rule.kind)
            return Injection(
                kind=rule.kind,
                wait_seconds=self._wait(rule),
                after_execution=rule.after_execution,
                rule_id=rule.id,
            )
        return None

    def decide_callback(self, origin: str) -> CallbackFault | None:
        """The callback fault of a transaction accepted on `origin` (an async path or the
        top-up control path), counted as used; None for normal callbacks.
        """
        self.callbacks += 1
        for rule in self.rules:
            if not rule.is_callback or not rule.applies_to(origin) or not self._draw(rule):
                continue
            self._count(origin, rule.kind)
            callback_kind: CallbackKind = rule.kind  # type: ignore[assignment]  # is_callback
            return CallbackFault(
                kind=callback_kind,
                wait_seconds=self._wait(rule),
                copies=rule.copies,
                rule_id=rule.id,
            )
        return None

    def stats_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "requests": self.requests,
            "callbacks": self.callbacks,
            "scriptSteps": self.script_steps,
            "total": sum(self.by_kind.values()),
            "byKind": dict(self.by_kind),
            "byPath": {path: dict(kinds) for path, kinds in self.by_path.items()},
        }
