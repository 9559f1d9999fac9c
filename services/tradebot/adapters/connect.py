"""Settings shared by the pipeline services, what a service is given to run with, and building the bus
and store its settings name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator, model_validator

from tradebot.adapters.bus import Bus
from tradebot.adapters.store import Store
from tradebot.core.costs import Costs
from tradebot.kit.app import create_service_app, readiness_of
from tradebot.kit.health import Readiness, ReadinessCheck, tcp_check
from tradebot.kit.lifecycle import ShutdownEvent, run_service
from tradebot.kit.settings import SecretUrl, ServiceSettings, load_settings_or_exit


class PipelineSettings(ServiceSettings):
    """Where Kafka and Redis are, and the cost model the strategy and the paper broker share."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", min_length=3, description="Kafka bootstrap servers."
    )
    redis_url: SecretUrl = Field(
        default=SecretUrl("redis://127.0.0.1:6379/0"),
        description="Redis URL; a password in it (`redis://:pw@host`) is masked wherever settings are shown.",
    )
    redis_prefix: str = Field(default="tradebot", pattern=r"^[A-Za-z0-9_.-]+$")
    redis_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait for any one Redis command's answer."
    )
    redis_stream_maxlen: int = Field(
        default=100_000,
        ge=100,
        le=100_000_000,
        description="Entries kept in Redis' order log and fills (approximately) and signals; the full history is on the topics.",
    )
    redis_connect_timeout_seconds: float = Field(
        default=2.0, gt=0, le=300, description="Longest wait for a connection to Redis."
    )
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_replication_factor: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Replicas of the topics the services create (unset: 3, or the number of brokers if fewer).",
    )
    kafka_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="min.insync.replicas of the topics the services create (unset: 2 with 3 or more replicas, else 1).",
    )
    commission_pct: float = Field(default=0.0, ge=0, le=10)
    commission_fixed: float = Field(default=0.0, ge=0)
    slippage_bps: float = Field(default=0.0, ge=0, le=1000)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretUrl) -> SecretUrl:
        if not url.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return url

    @model_validator(mode="after")
    def _in_sync_within_replicas(self) -> PipelineSettings:
        replicas, in_sync = self.kafka_replication_factor, self.kafka_min_insync_replicas
        if replicas is not None and in_sync is not None and in_sync > replicas:
            raise ValueError(
                f"TRADEBOT_KAFKA_MIN_INSYNC_REPLICAS ({in_sync}) is more than TRADEBOT_KAFKA_REPLICATION_FACTOR"
                f" ({replicas}): every write would be refused"
            )
        return self

    def costs(self) -> Costs:
        return Costs(
            commission_pct=self.commission_pct,
            commission_fixed=self.commission_fixed,
            slippage_bps=self.slippage_bps,
        )


def kafka_bus(settings: PipelineSettings) -> Bus:
    from tradebot.adapters.kafka import KafkaBus

    return KafkaBus(
        settings.kafka_bootstrap,
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
    )


def redis_store(settings: PipelineSettings) -> Store:
    from tradebot.adapters.redis_store import RedisStore

    return RedisStore(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_seconds,
        connect_timeout_s=settings.redis_connect_timeout_seconds,
        stream_maxlen=settings.redis_stream_maxlen,
    )


def kafka_reachable(settings: PipelineSettings) -> ReadinessCheck:
    """A readiness check: one of the bootstrap servers accepts TCP connections (the clients fail over to
    any of them, so one broker down must not make every pod unready)."""
    checks = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        checks.append(tcp_check(host or "127.0.0.1", int(port or 9092)))

    async def any_reachable() -> bool:
        # All at once, the first success wins: a dead broker whose address hangs must not use up the time
        # the readiness probe gives the check before a live one is tried.
        pending = {asyncio.ensure_future(check()) for check in checks}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None and task.result():
                        return True
                    error = task.exception() or error
        finally:
            for task in pending:
                task.cancel()
        if error is not None:
            raise error
        return False

    return any_reachable


@dataclass(frozen=True)
class Wiring:
    """What a pipeline service runs with, besides its settings: the bus and the store, the registry its
    metrics go to, the readiness its checks join, and the shutdown it stops on. A service process builds
    its own (`run_pipeline_service`); `tradebot up --embedded` gives every service the same in-memory bus
    and store, and the registry and readiness of its one HTTP server."""

    bus: Bus
    store: Store
    registry: CollectorRegistry
    readiness: Readiness
    shutdown: ShutdownEvent


S = TypeVar("S", bound=PipelineSettings)
PipelineMain = Callable[[S, Wiring], Awaitable[None]]


def run_pipeline_service(settings_class: type[S], main: PipelineMain[S]) -> int:
    """What `tradebot feed|strategy|executor` do: read settings (exit 2 naming a bad variable), connect to
    Kafka and Redis, serve /livez /readyz /metrics beside `main`, close the clients on the way out."""
    settings = load_settings_or_exit(settings_class)
    store = redis_store(settings)
    app = create_service_app(
        settings, readiness_checks={"redis": store.ping, "kafka": kafka_reachable(settings)}
    )

    async def service(shutdown: ShutdownEvent) -> None:
        bus = kafka_bus(settings)
        try:
            await main(settings, Wiring(bus, store, app.state.registry, readiness_of(app), shutdown))
        finally:
            bus.close()
            await store.close()

    return run_service(service, settings, app=app)
