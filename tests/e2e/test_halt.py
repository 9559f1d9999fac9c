"""Halting through the API: the executor refuses the strategy's entries, visibly, until resumed."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from tests.e2e.harness import Pipeline, read_keyed, read_topic
from tests.e2e.test_crash_safety import SPEED
from tests.plugins.servers import KafkaBroker


def call(
    pipeline: Pipeline[KafkaBroker], method: str, path: str, token: str | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{pipeline.api_port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_halted_strategy_entries_are_refused_and_visible(pipeline: Pipeline[KafkaBroker]) -> None:
    pipeline.start_replay(speed=SPEED, with_api=True)
    pipeline.wait_http("api")
    pipeline.wait_until(
        "the strategy registered", lambda: call(pipeline, "GET", "/strategies")[1]["items"] != [], 60
    )
    pipeline.wait_until("first fills", lambda: len(call(pipeline, "GET", "/fills")[1]["items"]) > 0, 60)

    assert call(pipeline, "POST", "/strategies/parity/halt")[0] == 401
    assert call(pipeline, "POST", "/strategies/parity/halt", "wrong")[0] == 403
    assert call(pipeline, "POST", "/strategies/parity/halt", "secret-token") == (
        200,
        {"id": "parity", "halted": True},
    )
    time.sleep(5)
    assert call(pipeline, "POST", "/strategies/parity/resume", "secret-token")[0] == 200

    def replay_done() -> bool:
        return len(read_topic(pipeline.kafka.bootstrap, "ticks")) == 2148

    pipeline.wait_until("the replay", replay_done, 120)

    def books_agree() -> bool:
        """The strategy's last snapshot holds what the broker holds, with no order in flight."""
        broker = {
            f["order"]["symbol"]: f["position"]["qty"]
            for f in read_topic(pipeline.kafka.bootstrap, "fills")
            if f["order"]["strategy_id"] == "parity"
        }
        # The strategy's state is a head record keyed "parity" and one record per symbol keyed "parity/<symbol>":
        # the last of each key is the committed state.
        symbols = {
            key.split("/", 1)[1]: state
            for key, state in read_keyed(pipeline.kafka.bootstrap, "strategy-state.parity")
            if key.startswith("parity/")
        }
        return bool(broker) and all(
            not state["in_flight"] and abs(state["qty"] - broker.get(name, 0.0)) < 1e-9
            for name, state in symbols.items()
        )

    pipeline.wait_until("the strategy's book to match the broker's", books_agree, 60)
    fills = read_topic(pipeline.kafka.bootstrap, "fills")
    refused = [f for f in fills if f["fill"]["status"] == "rejected"]
    entries = [f for f in refused if f["order"]["reason"] in ("entry_long", "entry_short")]
    exits = [f for f in refused if f not in entries]
    assert entries, "no entry was refused while halted"
    assert {f["fill"]["reject_reason"] for f in entries} == {"strategy halted"}
    # An exit the strategy sent before it learnt that its entry was refused finds nothing to close;
    # the strategy undoes both when the entry's refusal arrives, so there is at most one such exit
    # per refused entry (no phantom position for its stops to trade on meanwhile).
    assert {f["fill"]["reject_reason"] for f in exits} <= {"no position to close"}
    assert len(exits) <= len(entries)
    last_refusal = max(i for i, f in enumerate(fills) if f["fill"]["status"] == "rejected")
    assert any(
        f["fill"]["status"] == "filled" and f["order"]["reason"] == "entry_long" for f in fills[last_refusal:]
    ), "entries did not resume"
    # Visible through the API as well.
    api_refused = [
        f for f in call(pipeline, "GET", "/fills?limit=1000")[1]["items"] if f["status"] == "rejected"
    ]
    assert len(api_refused) == len(refused)
