"""Where notifications go: each sink's configuration, the event it is told about, and the HTTP request that
tells it (the generic webhook's JSON, Slack's and Discord's incoming-webhook payloads, Telegram's bot API).

Pure: no I/O here; `runner.py` sends the requests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from tradebot.adapters.bus import Record
from tradebot.adapters.topics import COMMANDS, CONTROL, FILLS, ExitCommand, FillRecord, HaltCommand
from tradebot.core.cockpit import EventKind, fill_event

SinkKind = Literal["webhook", "slack", "discord", "telegram"]
TELEGRAM_API = "https://api.telegram.org"
# Discord refuses a message longer than this; Telegram's limit is 4096.
DISCORD_MAX_CHARS = 2000
TELEGRAM_MAX_CHARS = 4096


class SinkConfig(BaseModel):
    """One destination (an item of TRADEBOT_NOTIFIER_SINKS). `url` and `bot_token` are secrets: a webhook's
    URL is its credential (Slack's and Discord's carry a token in the path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Unique; labels the metrics and keys the delivery marks (keep it across restarts).",
    )
    kind: SinkKind
    url: SecretStr | None = Field(
        default=None,
        description="webhook, slack, discord: the URL to POST to (required). telegram: the bot API's base URL "
        f"(default {TELEGRAM_API}).",
    )
    bot_token: SecretStr | None = Field(default=None, description="telegram: the bot's token (required).")
    chat_id: str | None = Field(
        default=None, min_length=1, description="telegram: the chat to post to (required)."
    )
    strategies: list[str] = Field(
        default_factory=list, description="Only these strategies' events (empty: every strategy's)."
    )
    events: list[EventKind] = Field(
        default_factory=list,
        description="Only these kinds of event, e.g. halt, stop-out, force-exit (empty: every kind).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http://)")
        return url

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Self:
        if self.kind == "telegram":
            missing = [name for name in ("bot_token", "chat_id") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"sink {self.name!r}: a telegram sink needs {' and '.join(missing)}")
        else:
            if self.url is None:
                raise ValueError(f"sink {self.name!r}: a {self.kind} sink needs url")
            if self.bot_token is not None or self.chat_id is not None:
                raise ValueError(f"sink {self.name!r}: bot_token and chat_id are for telegram sinks only")
        return self

    def wants(self, event: Notification) -> bool:
        """The sink's filters: the event's strategy and kind among those it asked for (empty: all)."""
        if self.strategies and event.strategy_id not in self.strategies:
            return False
        return not self.events or event.kind in self.events


class Notification(BaseModel):
    """An event worth telling someone about, as the generic webhook receives it (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    id: str = Field(description="Stable across redeliveries: the Idempotency-Key header of the webhook.")
    kind: EventKind
    strategy_id: str
    symbol: str | None = None
    ts: datetime
    text: str = Field(description="One line for a human (what Slack, Discord and Telegram show).")
    topic: str
    data: dict[str, Any] = Field(description="The record it came from (fills: order, fill and position).")


def notification_of(record: Record) -> Notification | None:
    """The notification a record of `fills`, `strategy-control` or `strategy-commands` is (None: another
    topic). Raises pydantic's ValidationError for an unreadable record."""
    if record.topic == FILLS:
        fill_record = FillRecord.model_validate_json(record.value)
        event = fill_event(fill_record.fill, fill_record.order.ts)
        return Notification(
            # One fill record per order (the executor fills each order id once).
            id=f"fill:{fill_record.order.id}",
            kind=event.kind,
            strategy_id=event.strategy_id,
            symbol=event.symbol,
            ts=event.ts,
            text=f"[{event.strategy_id}] {event.symbol} {event.message}",
            topic=record.topic,
            data=fill_record.model_dump(mode="json"),
        )
    if record.topic == CONTROL:
        halt = HaltCommand.model_validate_json(record.value)
        kind: EventKind = "halt" if halt.halted else "resume"
        return Notification(
            # A halt has no id of its own: its place on the topic is one.
            id=f"control:{record.partition}:{record.offset}",
            kind=kind,
            strategy_id=halt.strategy_id,
            ts=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
            text=f"[{halt.strategy_id}] {'halted: no new entries' if halt.halted else 'resumed'}",
            topic=record.topic,
            data=halt.model_dump(mode="json"),
        )
    if record.topic == COMMANDS:
        command = ExitCommand.model_validate_json(record.value)
        what = f"force-exit of {command.symbol}" if command.symbol else "close-all"
        return Notification(
            # A repeated command (a client's retry, same command id) is the same event.
            id=f"command:{command.command_id}",
            kind="force-exit-request",
            strategy_id=command.strategy_id,
            symbol=command.symbol,
            ts=command.ts,
            text=f"[{command.strategy_id}] {what} requested (command {command.command_id})",
            topic=record.topic,
            data=command.model_dump(mode="json"),
        )
    return None


class Request(BaseModel):
    """What to POST: URL, JSON body, extra headers."""

    model_config = ConfigDict(frozen=True)

    url: str
    body: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)


def request_for(sink: SinkConfig, event: Notification) -> Request:
    """The HTTP request that tells `sink` about `event`."""
    if sink.kind == "telegram":
        assert sink.bot_token is not None  # checked by SinkConfig
        base = (sink.url.get_secret_value() if sink.url is not None else TELEGRAM_API).rstrip("/")
        return Request(
            url=f"{base}/bot{sink.bot_token.get_secret_value()}/sendMessage",
            body={"chat_id": sink.chat_id, "text": event.text[:TELEGRAM_MAX_CHARS]},
        )
    assert sink.url is not None  # checked by SinkConfig
    url = sink.url.get_secret_value()
    if sink.kind == "slack":
        return Request(url=url, body={"text": event.text})
    if sink.kind == "discord":
        return Request(url=url, body={"content": event.text[:DISCORD_MAX_CHARS]})
    return Request(url=url, body=event.model_dump(mode="json"), headers={"Idempotency-Key": event.id})
