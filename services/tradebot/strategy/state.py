"""How a strategy's state is laid out as records of its compacted `strategy-state.<id>` topic.

A head record (cash, day, parameters, commands handled) keyed by the strategy id, and the symbols' states
in *groups*: records keyed `<strategy>#<n>`, each holding the states of a fixed run of the symbols (sorted).
Every transaction writes the head and the groups holding a symbol it changed.

Why groups, and why this size: one record for everything outgrew Kafka's 1 MB record limit (20 symbols with
windows of 3000 made 1.18 MB: every transaction aborted); one record per symbol made a batch at 5k ticks/s
over 100 symbols produce about 70 state records beside its few orders, and those records were most of the
strategy's and a good share of the broker's work. A group holds as many symbols as fit the record budget at
the most their state can take (`symbol_state_bound`), so a group stays under the limit whatever happens;
with small windows that is a few records per transaction.

Each record names its head's *generation*. A generation lives from one rebuild to the next (every rebuild
starts a new one and writes every group of it at the first commit), so the groups read back for a head are
exactly those its process wrote, laid out as it laid them out: a group left on the compacted topic by an
earlier layout or an earlier strategy is never taken. Version 1 heads (before groups) came with one record
per symbol, `<strategy>/<symbol>`, which are still read, so an upgrade resumes where the last version stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tradebot.core.live import MAX_TRACKED_IN_FLIGHT
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import SNAPSHOT_VERSION

# The head's version when the symbols are in groups. An older service reading it refuses it by name
# (`strategy snapshot version 2 is not 1`) rather than restoring a strategy without its positions.
GROUPED_VERSION = 2
# Under Kafka's default record limit (librdkafka's message.max.bytes, 1,000,000) with room to spare.
STATE_RECORD_BUDGET = 800_000
# The most a float takes in JSON with its comma (`-1.2345678901234567e-308,`), an order in flight (its id,
# reason, side and four floats) and the rest of a symbol's state (its scalars and its bar in progress).
_FLOAT_BYTES = 25
_IN_FLIGHT_BYTES = 400
_FIXED_BYTES = 2_000
# Compact and without the circular check (a state is a tree we built): about twice as fast as `json.dumps`.
# NaN stays NaN, as the state always had it, so every version reads every other's symbols alike.
_ENCODER = json.JSONEncoder(check_circular=False, separators=(",", ":"))


def symbol_state_bound(params: StrategyParams) -> int:
    """The most bytes one symbol's state can take as JSON: its averages' windows, its tracked orders in
    flight and the rest."""
    windows = params.short_window + params.long_window
    return _FIXED_BYTES + _FLOAT_BYTES * windows + _IN_FLIGHT_BYTES * MAX_TRACKED_IN_FLIGHT


# In neither a strategy id nor a symbol: a group key is never a head's or a symbol's.
_GROUP_SEPARATOR = "#"


def group_key(strategy_id: str, index: int) -> bytes:
    return f"{strategy_id}{_GROUP_SEPARATOR}{index}".encode()


@dataclass
class StoredState:
    """What the state topic holds for one strategy: the last head, and the last record of each symbol
    (version 1) and of each group."""

    head: bytes | None = None
    symbols: dict[str, bytes] = field(default_factory=dict)
    groups: dict[bytes, bytes] = field(default_factory=dict)

    def add(self, strategy_id: str, key: bytes | None, value: bytes) -> None:
        """One record of the topic, in order (a later record of a key replaces an earlier one)."""
        if key is None:
            return
        if key == strategy_id.encode():
            self.head = value
        elif key.startswith(f"{strategy_id}/".encode()):
            self.symbols[key[len(strategy_id) + 1 :].decode()] = value
        elif key.startswith(f"{strategy_id}{_GROUP_SEPARATOR}".encode()):
            self.groups[key] = value

    def snapshot(self) -> dict[str, Any] | None:
        """The whole snapshot the head describes, with the symbols' states of its own generation only;
        None without a head."""
        if self.head is None:
            return None
        snap: dict[str, Any] = json.loads(self.head)
        generation = snap.pop("generation", None)
        # A snapshot from before the split holds its symbols itself.
        symbols: dict[str, Any] = snap.get("symbols", {})
        if generation is not None:
            for symbol, value in self.symbols.items():
                state = json.loads(value)
                if state.pop("generation", None) == generation:
                    symbols[symbol] = state
            for value in self.groups.values():
                group = json.loads(value)
                if group.get("generation") == generation:
                    symbols.update(group["symbols"])
        if snap.get("version") == GROUPED_VERSION:
            # The strategy's own format is the same; only the records' layout differs.
            snap["version"] = SNAPSHOT_VERSION
        return {**snap, "symbols": symbols}


class StateLayout:
    """The groups of one generation, and each symbol's state as last encoded (a group rewritten because
    one of its symbols changed re-encodes only that symbol)."""

    def __init__(self, strategy_id: str, params: StrategyParams, symbols: Iterable[str], generation: str):
        self.strategy_id = strategy_id
        self.generation = generation
        per_group = max(1, STATE_RECORD_BUDGET // symbol_state_bound(params))
        ordered = sorted(set(symbols))
        self.groups = [ordered[start : start + per_group] for start in range(0, len(ordered), per_group)]
        self.group_of = {symbol: n for n, members in enumerate(self.groups) for symbol in members}
        self._encoded: dict[str, str] = {}
        self._names = {symbol: json.dumps(symbol) for symbol in ordered}

    def covers(self, symbols: Iterable[str]) -> bool:
        return all(symbol in self.group_of for symbol in symbols)

    def records(self, changed: dict[str, dict[str, Any]], head: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """(key, value) of every group holding a symbol in `changed` (symbol -> its state now), then the
        head's. A symbol not laid out is a bug of the caller's (`covers` says when to lay out anew)."""
        for symbol, state in changed.items():
            self._encoded[symbol] = _ENCODER.encode(state)
        out: list[tuple[bytes, bytes]] = []
        for n in sorted({self.group_of[symbol] for symbol in changed}):
            members = ",".join(
                f"{self._names[symbol]}:{self._encoded[symbol]}"
                for symbol in self.groups[n]
                if symbol in self._encoded
            )
            value = f'{{"generation":"{self.generation}","symbols":{{{members}}}}}'
            out.append((group_key(self.strategy_id, n), value.encode()))
        head_record = {**head, "version": GROUPED_VERSION, "generation": self.generation}
        out.append((self.strategy_id.encode(), _ENCODER.encode(head_record).encode()))
        return out
