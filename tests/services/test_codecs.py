"""Feed codecs: every message is ticks, a control message, or a refusal with a reason; never a crash."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.feed.codecs import (
    MAX_DEPTH,
    REJECT_CODES,
    BinanceCodec,
    Rejected,
    SimulatorCodec,
    _never_raising,
)

GOOD = {"type": "tick", "symbol": "AAPL", "price": 101.5, "size": 3.0, "ts": "2024-01-02T15:04:05Z", "seq": 7}


def test_simulator_tick_decodes() -> None:
    ticks = SimulatorCodec().decode(json.dumps(GOOD))
    assert not isinstance(ticks, Rejected)
    assert [(t.symbol, t.price, t.seq) for t in ticks] == [("AAPL", 101.5, 7)]
    assert SimulatorCodec().decode('{"type": "subscribed", "symbols": []}') == []


def test_simulator_refusals_name_the_problem() -> None:
    codec = SimulatorCodec()
    cases = {
        "{not json": ("not_json", "not JSON"),
        "[1, 2]": ("not_object", "not a JSON object"),
        json.dumps({**GOOD, "type": "trade"}): ("unknown_type", "type"),
        json.dumps({**GOOD, "price": -1}): ("invalid_field", "price"),
        json.dumps({**GOOD, "price": "NaN"}): ("invalid_field", "price"),
        json.dumps({**GOOD, "ts": "2024-01-02T15:04:05"}): ("invalid_field", "ts"),
        json.dumps({**GOOD, "colour": "red"}): ("invalid_field", "colour"),
        json.dumps({k: v for k, v in GOOD.items() if k != "symbol"}): ("missing_field", "symbol"),
    }
    for raw, (code, text) in cases.items():
        result = codec.decode(raw)
        assert isinstance(result, Rejected), raw
        assert (result.code, text in result.reason) == (code, True), (raw, result)


def test_binance_trade_stream() -> None:
    codec = BinanceCodec()
    trade = {
        "e": "trade",
        "E": 1700000000100,
        "s": "BTCUSDT",
        "t": 12345,
        "p": "37000.50",
        "q": "0.002",
        "T": 1700000000000,
        "m": True,
    }
    for raw in (json.dumps(trade), json.dumps({"stream": "btcusdt@trade", "data": trade})):
        ticks = codec.decode(raw)
        assert not isinstance(ticks, Rejected)
        assert [(t.symbol, t.price, t.size, t.seq, t.ts.year) for t in ticks] == [
            ("BTCUSDT", 37000.5, 0.002, 12345, 2023)
        ]
    assert codec.decode('{"result": null, "id": 1}') == []
    assert codec.decode(json.dumps({k: v for k, v in trade.items() if k != "p"})) == Rejected(
        "missing_field", "p: missing"
    )
    negative = codec.decode(json.dumps({**trade, "p": "-5"}))
    assert isinstance(negative, Rejected)
    assert negative.code == "invalid_field"
    assert codec.decode(json.dumps({**trade, "e": "kline"})) == Rejected(
        "unsupported_event", "e: unsupported event 'kline'"
    )
    assert json.loads(codec.subscribe_message(["BTCUSDT"], 0))["params"] == ["btcusdt@trade"]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)


@given(raw=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw: str | bytes) -> None:
    for codec in (SimulatorCodec(), BinanceCodec()):
        result = codec.decode(raw)
        assert isinstance(result, list | Rejected)
        if isinstance(result, Rejected):
            assert result.reason
            assert result.code in REJECT_CODES


@given(
    message=st.dictionaries(
        st.sampled_from([*list(GOOD), "e", "p", "q", "T", "t", "s"]), json_values, max_size=8
    )
)
def test_malformed_messages_are_refused_with_a_reason(message: dict[str, object]) -> None:
    for codec in (SimulatorCodec(), BinanceCodec()):
        result = codec.decode(json.dumps(message, allow_nan=True))
        if isinstance(result, Rejected):
            assert result.reason
        else:
            for tick in result:
                assert tick.price > 0


# Openers whose closers are computed: lists, objects, and objects under the keys each codec reads.
_OPENERS = ["[", '{"a":', '{"data":', '{"stream":"x","data":', '{"p":', '{"s":', '{"symbol":', '{"e":']


def _nested(openers: list[str], depth: int, leaf: str, around: str) -> str:
    """`depth` levels built from `openers` (cycled), `leaf` innermost, the whole inside `around`'s `{}`."""
    chosen = [openers[i % len(openers)] for i in range(depth)]
    closers = "".join("]" if opener == "[" else "}" for opener in reversed(chosen))
    return around.replace("{}", "".join(chosen) + leaf + closers)


_AROUND = [
    "{}",
    '{"type": "tick", "symbol": {}, "price": 1, "size": 1, "ts": "2024-01-02T15:04:05Z", "seq": 1}',
    '{"type": "tick", "price": {}}',
    '{"e": "trade", "s": {}, "p": "1", "q": "1", "T": 1700000000000, "t": 1}',
    '{"e": {}}',
    '{"stream": "s", "data": {"e": "trade", "p": {}, "q": "1", "s": "X", "T": 1, "t": 1}}',
]


@settings(max_examples=300, deadline=None)
@given(
    openers=st.lists(st.sampled_from(_OPENERS), min_size=1, max_size=4),
    depth=st.one_of(st.integers(1, 50), st.integers(500, 200_000)),
    leaf=st.sampled_from(["1", '"x"', "null", "[]", "{}", "", "1e999"]),
    around=st.sampled_from(_AROUND),
    as_bytes=st.booleans(),
    tail=st.binary(max_size=8),
)
def test_deep_nesting_is_refused_with_a_reason_never_raised(
    openers: list[str], depth: int, leaf: str, around: str, as_bytes: bool, tail: bytes
) -> None:
    """Issue 14.10: a deeply nested message made `json.loads` (or a `str`/`repr` of a value) raise
    RecursionError out of the codec, which stopped the feed."""
    text = _nested(openers, depth, leaf, around)
    raw: str | bytes = text.encode() + tail if as_bytes else text
    for codec in (SimulatorCodec(), BinanceCodec()):
        result = codec.decode(raw)
        assert isinstance(result, list | Rejected)
        if isinstance(result, Rejected):
            assert result.reason
            assert result.code in REJECT_CODES
            assert len(result.reason) <= 500  # a dead letter's reason stays readable
        if depth > MAX_DEPTH:
            assert isinstance(result, Rejected)


# Values a tick's fields may take, right or wrong, so most messages are ticks and the rest near misses.
_near_tick_values = {
    "type": st.sampled_from(["tick", "trade", "subscribed", "end", "Tick", 1, None]),
    "schema_version": st.sampled_from([1, 2, "1", 1.0, True]),
    "symbol": st.sampled_from(["AAPL", "BTC/USDT", "", "a" * 40, "bad symbol", 5]),
    "price": st.floats(allow_nan=True) | st.integers() | st.sampled_from(["1.5", "NaN", None]),
    "size": st.floats(allow_nan=True) | st.integers(-3, 10**20) | st.sampled_from(["3", None]),
    "ts": st.sampled_from(
        ["2024-01-02T15:04:05Z", "2024-01-02T15:04:05.123456+02:00", "2024-01-02T15:04:05", "", 1704200000]
    ),
    "seq": st.integers(-2, 2**70) | st.sampled_from([None, "7", 7.0, True]),
    "colour": st.just("red"),
}


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {k: v for k, v in _near_tick_values.items() if k in ("type", "symbol", "price", "ts")},
        optional={k: v for k, v in _near_tick_values.items() if k not in ("type", "symbol", "price", "ts")},
    ),
    duplicate=st.sampled_from([None, *_near_tick_values]),
    as_bytes=st.booleans(),
)
def test_a_simulator_message_decodes_as_the_careful_way_decodes_it(
    fields: dict[str, object], duplicate: str | None, as_bytes: bool
) -> None:
    """The one-pass parse of ticks gives exactly what the careful way (a JSON parse, then the checks, then
    the model) gives: the same ticks, the same refusals, whatever the message."""
    raw = json.dumps(fields, allow_nan=True)
    if duplicate is not None and duplicate in fields:  # a key twice: the last one counts, either way
        raw = raw[:-1] + f", {json.dumps(duplicate)}: {json.dumps(fields[duplicate], allow_nan=True)}}}"
    message = raw.encode() if as_bytes else raw
    careful = _never_raising(lambda _codec, raw: SimulatorCodec._decode_other(raw))
    expected = careful(None, message)
    got = SimulatorCodec().decode(message)
    assert got == expected
    if isinstance(got, list) and got:
        assert got[0].model_dump_json() == expected[0].model_dump_json()  # type: ignore[index]
