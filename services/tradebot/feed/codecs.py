"""Turning a source's WebSocket messages into `Tick`s, or into a reason why not.

`decode` never raises: a message is either ticks, a control message (ignored), or a `Rejected` with a
reason naming what is wrong, which the feed sends to the dead-letter topic.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from tradebot.core.models import Tick

Source = Literal["simulator", "binance"]


RejectCode = Literal[
    "not_json", "not_object", "too_deep", "unknown_type", "unsupported_event", "missing_field",
    "invalid_field", "undecodable",
]  # fmt: skip
REJECT_CODES: tuple[RejectCode, ...] = (
    "not_json", "not_object", "too_deep", "unknown_type", "unsupported_event", "missing_field",
    "invalid_field", "undecodable",
)  # fmt: skip
# A tick is two levels deep (a combined stream's envelope, then the trade). Anything much deeper is not a
# message of ours, and refusing it early keeps `str`/`repr` of a value from recursing out of the codec.
MAX_DEPTH = 32
_REASON_LIMIT = 300


@dataclass(frozen=True)
class Rejected:
    """Why a message is not a tick: `code` is one of a fixed set (a metric label), `reason` says exactly
    what is wrong (the dead letter's text)."""

    code: RejectCode
    reason: str


Decoded = list[Tick] | Rejected


class Codec(Protocol):
    name: str

    def subscribe_message(self, symbols: list[str], from_seq: int) -> str: ...

    def decode(self, raw: str | bytes) -> Decoded: ...


def _shown(value: object) -> str:
    """`repr(value)` cut short, for a reason: a message's value can be of any size."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# What Python raises on a value of the wrong shape or size: str/repr/float/int of a nested or huge value,
# a missing key, an attribute of the wrong type, and recursion in anything nested.
_VALUE_ERRORS = (RecursionError, ValueError, TypeError, OverflowError, KeyError, AttributeError, IndexError)


def _never_raising(decode: Callable[[Any, str | bytes], Decoded]) -> Callable[[Any, str | bytes], Decoded]:
    """The codecs' promise, whatever the message: ticks, or a refusal with a reason the feed can dead-letter
    (a crash here would stop the feed on one hostile message)."""

    @functools.wraps(decode)
    def safe(self: Any, raw: str | bytes) -> Decoded:
        try:
            decoded = decode(self, raw)
        except (
            _VALUE_ERRORS
        ) as exc:  # what a hostile value can raise past the checks below (not a bug's errors)
            return Rejected("undecodable", f"cannot decode: {type(exc).__name__}")
        if isinstance(decoded, Rejected) and len(decoded.reason) > _REASON_LIMIT:
            return Rejected(decoded.code, decoded.reason[: _REASON_LIMIT - 3] + "...")
        return decoded

    return safe


def _nesting_depth(raw: str | bytes) -> int:
    """How deep `[`/`{` nest (0 when they cannot nest deeper than MAX_DEPTH) in `raw`, outside strings: a scan, so no input can exhaust the stack."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # a tick has two: skip the scan on the hot path
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _invalid(exc: ValidationError) -> Rejected:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"]) or "message"
    return Rejected(
        "missing_field" if error["type"] == "missing" else "invalid_field", f"{loc}: {error['msg']}"
    )


def _load(raw: str | bytes) -> Any | Rejected:
    depth = _nesting_depth(raw)
    if depth > MAX_DEPTH:
        return Rejected("too_deep", f"nested {depth} levels deep, more than {MAX_DEPTH}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejected("not_json", f"not JSON: {exc}")
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so the promise holds if that changes
        return Rejected("too_deep", "nested too deep to decode")


class _SimulatorTickMessage(Tick):
    """A simulator's tick message as it comes: the tick and its message type."""

    type: Literal["tick"]


_TICK_FIELDS = tuple(Tick.model_fields)


class SimulatorCodec:
    """Our simulator's messages (see tradebot.simulator.server)."""

    name = "simulator"

    def subscribe_message(self, symbols: list[str], from_seq: int) -> str:
        return json.dumps({"op": "subscribe", "symbols": symbols or "*", "from_seq": from_seq})

    @_never_raising
    def decode(self, raw: str | bytes) -> Decoded:
        # Nearly every message is a tick: parsed and validated in one pass, in pydantic's parser. Anything
        # else takes the way below, which tells control messages from errors and names what is wrong.
        # (A JSON round trip per tick was a sixth of the feed's time at 5k ticks/s.)
        try:
            message = _SimulatorTickMessage.model_validate_json(raw)
        except ValidationError:
            return self._decode_other(raw)
        fields = {name: getattr(message, name) for name in _TICK_FIELDS}
        return [Tick.model_construct(message.model_fields_set - {"type"}, **fields)]

    @staticmethod
    def _decode_other(raw: str | bytes) -> Decoded:
        message = _load(raw)
        if isinstance(message, Rejected):
            return message
        if not isinstance(message, dict):
            return Rejected("not_object", "message is not a JSON object")
        kind = message.get("type")
        if kind in ("subscribed", "end"):
            return []
        if kind != "tick":
            return Rejected("unknown_type", f"type: unknown message type {_shown(kind)}")
        body = {key: value for key, value in message.items() if key != "type"}
        try:
            return [Tick.model_validate_json(json.dumps(body))]
        except ValidationError as exc:
            return _invalid(exc)


class BinanceCodec:
    """Binance spot public trade streams (`<symbol>@trade`), raw or combined (`{"stream", "data"}`).

    A trade: `{"e": "trade", "E": event ms, "s": "BTCUSDT", "t": trade id, "p": "price", "q": "qty",
    "T": trade ms, "m": buyer is maker}`. The trade id is the tick's `seq`.
    """

    name = "binance"

    def subscribe_message(self, symbols: list[str], from_seq: int) -> str:
        del from_seq  # a live exchange cannot replay; the feed reports the gap instead
        return json.dumps({"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade" for s in symbols], "id": 1})

    @_never_raising
    def decode(self, raw: str | bytes) -> Decoded:
        message = _load(raw)
        if isinstance(message, Rejected):
            return message
        if isinstance(message, dict) and "data" in message and "stream" in message:
            message = message["data"]
        if not isinstance(message, dict):
            return Rejected("not_object", "message is not a JSON object")
        if "result" in message and "id" in message:
            return []  # the answer to SUBSCRIBE
        if message.get("e") != "trade":
            return Rejected("unsupported_event", f"e: unsupported event {_shown(message.get('e'))}")
        try:
            price = float(message["p"])
            qty = float(message["q"])
            ts = datetime.fromtimestamp(int(message["T"]) / 1000.0, tz=UTC)
            tick = Tick(symbol=str(message["s"]), price=price, size=qty, ts=ts, seq=int(message["t"]))
        except KeyError as exc:
            return Rejected("missing_field", f"{exc.args[0]}: missing")
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ValidationError):
                return _invalid(exc)
            return Rejected("invalid_field", f"bad value: {exc}")
        return [tick]


def codec_for(source: Source) -> Codec:
    return SimulatorCodec() if source == "simulator" else BinanceCodec()
