"""Turning a source's WebSocket messages into `Tick`s, or into a reason why not.

`decode` never raises: a message is either ticks, a control message (ignored), or a `Rejected` with a
reason naming what is wrong, which the feed sends to the dead-letter topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from tradebot.core.models import Tick

Source = Literal["simulator", "binance"]


RejectCode = Literal[
    "not_json", "not_object", "unknown_type", "unsupported_event", "missing_field", "invalid_field"
]
REJECT_CODES: tuple[RejectCode, ...] = (
    "not_json", "not_object", "unknown_type", "unsupported_event", "missing_field", "invalid_field"
)  # fmt: skip


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


def _invalid(exc: ValidationError) -> Rejected:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"]) or "message"
    return Rejected(
        "missing_field" if error["type"] == "missing" else "invalid_field", f"{loc}: {error['msg']}"
    )


def _load(raw: str | bytes) -> Any | Rejected:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejected("not_json", f"not JSON: {exc}")


class SimulatorCodec:
    """Our simulator's messages (see tradebot.simulator.server)."""

    name = "simulator"

    def subscribe_message(self, symbols: list[str], from_seq: int) -> str:
        return json.dumps({"op": "subscribe", "symbols": symbols or "*", "from_seq": from_seq})

    def decode(self, raw: str | bytes) -> Decoded:
        message = _load(raw)
        if isinstance(message, Rejected):
            return message
        if not isinstance(message, dict):
            return Rejected("not_object", "message is not a JSON object")
        kind = message.get("type")
        if kind in ("subscribed", "end"):
            return []
        if kind != "tick":
            return Rejected("unknown_type", f"type: unknown message type {kind!r}")
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
            return Rejected("unsupported_event", f"e: unsupported event {message.get('e')!r}")
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
