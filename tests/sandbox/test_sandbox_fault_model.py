"""The fault model without HTTP: rule and step parsing, decisions, seeds, and the
`--faults` / `--fault-seed` options.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaspro_sandbox.__main__ import build_parser, config_from_args
from kaspro_sandbox.faults import (
    FaultSpecError,
    FaultTable,
    Injection,
    rule_from_json,
    step_from_text,
)
from kaspro_sandbox.paths import (
    FAULTABLE_PATHS,
    P2P_PATH,
    STATUS_PATH,
    TOKEN_PATH,
    TRANSFER_PATHS,
)


def test_the_one_shot_form_fires_once() -> None:
    rule = rule_from_json({"path": P2P_PATH, "kind": "http_500"}, 1)
    assert (rule.probability, rule.times, rule.remaining) == (1.0, 1, 1)
    table = FaultTable()
    table.arm({"path": P2P_PATH, "kind": "http_500"})
    assert table.decide(P2P_PATH) == Injection(kind="http_500", rule_id=1)
    assert table.decide(P2P_PATH) is None


def test_a_probability_means_no_limit_unless_times_says_so() -> None:
    assert rule_from_json({"path": "*", "kind": "reset", "probability": 0.1}, 1).times is None
    limited = {"path": "*", "kind": "reset", "probability": 0.1, "times": 3}
    assert rule_from_json(limited, 1).times == 3
    explicit = {"path": "*", "kind": "reset", "times": None}
    assert rule_from_json(explicit, 1).times is None


@pytest.mark.parametrize(
    ("kind", "wait"),
    [("timeout_before", 60.0), ("timeout_after", 60.0), ("latency", 1.0), ("http_503", 0.0)],
)
def test_default_waits(kind: str, wait: float) -> None:
    assert rule_from_json({"path": "*", "kind": kind}, 1).delay_seconds == wait
    assert step_from_text(kind).wait_seconds == wait


def test_steps() -> None:
    assert step_from_text("timeout").kind == "timeout_after"
    step = step_from_text(" http_503:0.25 ")
    assert (step.kind, step.wait_seconds, step.text) == ("http_503", 0.25, "http_503:0.25")
    assert step_from_text("success").text == "success"
    with pytest.raises(FaultSpecError, match="unknown step"):
        step_from_text("in_process_forever")


def test_star_rules_only_act_where_their_kind_can() -> None:
    table = FaultTable()
    table.arm({"path": "*", "kind": "in_process_forever", "times": None})
    assert all(table.decide(path) is not None for path in TRANSFER_PATHS)
    assert table.decide(STATUS_PATH) is None
    assert table.decide("/register-customer/") is None
    table.clear()
    table.arm({"path": "*", "kind": "callback_drop", "times": None})
    assert table.decide(P2P_PATH) is None  # callback rules are not request rules
    assert table.decide_callback("/bank-transfer/") is not None
    assert table.decide_callback("/_sandbox/topup") is not None


def test_jitter_is_drawn_within_its_range() -> None:
    table = FaultTable(seed=1)
    table.arm({"path": "*", "kind": "latency", "delaySeconds": 0.5, "jitterSeconds": 0.25})
    table.rules[0].remaining = None
    waits = []
    for _ in range(50):
        injection = table.decide(P2P_PATH)
        assert injection is not None
        waits.append(injection.wait_seconds)
    assert all(0.5 <= wait <= 0.75 for wait in waits)
    assert len(set(waits)) > 40


def test_reset_rearms_the_initial_rules_and_reseeds() -> None:
    rules = [{"path": "*", "kind": "http_503", "probability": 0.5}]
    table = FaultTable(seed=5, rules=rules)
    first = [table.decide(P2P_PATH) is not None for _ in range(30)]
    table.arm({"path": "*", "kind": "garbage"})
    table.reset()
    assert [rule.kind for rule in table.rules] == ["http_503"]
    assert [table.decide(P2P_PATH) is not None for _ in range(30)] == first
    assert table.stats_json()["requests"] == 30


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    probabilities=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=4),
    paths=st.lists(st.sampled_from(FAULTABLE_PATHS), min_size=1, max_size=40),
)
def test_the_same_seed_and_requests_give_the_same_decisions(
    seed: int, probabilities: list[float], paths: list[str]
) -> None:
    kinds = ["http_500", "http_502", "latency", "reset"]
    rules = [
        {"path": "*", "kind": kind, "probability": p, "jitterSeconds": 0.1}
        for kind, p in zip(kinds, probabilities, strict=False)
    ]
    runs = []
    for _ in range(2):
        table = FaultTable(seed=seed, rules=rules)
        runs.append([table.decide(path) for path in paths])
    assert runs[0] == runs[1]


# the command line


def test_faults_file_and_fault_seed(tmp_path: Path) -> None:
    rules = [
        {"path": "*", "kind": "http_503", "probability": 0.05},
        {"path": "/bank-transfer/", "kind": "callback_duplicate", "copies": 3},
    ]
    file = tmp_path / "faults.json"
    file.write_text(json.dumps(rules))
    config = config_from_args(
        build_parser().parse_args(["--faults", str(file), "--fault-seed", "9"])
    )
    assert config.faults == tuple(rules)
    assert config.fault_seed == 9
    defaults = config_from_args(build_parser().parse_args([]))
    assert (defaults.faults, defaults.fault_seed) == ((), None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('{"path": "*"}', "must hold a JSON list"),
        ('[{"path": "*", "kind": "reset"}, {"path": "*", "kind": "boom"}]', "fault rule 2"),
        ("[1]", "fault rule 1: not a JSON object"),
    ],
)
def test_a_bad_faults_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    file = tmp_path / "faults.json"
    file.write_text(content)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--faults", str(file)])
    assert message in capsys.readouterr().err


def test_a_missing_faults_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--faults", str(tmp_path / "nowhere.json")])
    assert "cannot read" in capsys.readouterr().err


def test_the_standalone_server_resets_connections(tmp_path: Path) -> None:
    """`python -m kaspro_sandbox` (uvicorn's own loop, uvloop when installed) with a start-up
    rule: the first token request gets a reset, the second a token.
    """
    file = tmp_path / "faults.json"
    file.write_text(json.dumps([{"path": TOKEN_PATH, "kind": "reset"}]))
    command = [sys.executable, "-m", "kaspro_sandbox", "--port", "0", "--faults", str(file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("KasPro sandbox listening on "), first_line
        base_url = first_line.split()[-1]
        form = {
            "grant_type": "client_credentials",
            "client_id": "wallet-dev",
            "client_secret": "wallet-dev-secret",
        }
        with httpx.Client(base_url=base_url, timeout=5.0) as client:
            with pytest.raises(httpx.TransportError):
                client.post(TOKEN_PATH, data=form)
            assert client.post(TOKEN_PATH, data=form).status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=10)
