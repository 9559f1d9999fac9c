"""Settings shared by the pipeline services, what a service is given to run with, and building the bus
and store its settings name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from tradebot.adapters.bus import DEFAULT_SESSION_TIMEOUT_MS, Bus
from tradebot.adapters.store import Store
from tradebot.core.costs import Costs
from tradebot.kit.app import create_service_app, readiness_of
from tradebot.kit.health import Readiness, ReadinessCheck, tcp_check
from tradebot.kit.lifecycle import ShutdownEvent, run_service
from tradebot.kit.settings import SecretUrl, ServiceSettings, load_settings_or_exit

if TYPE_CHECKING:
    from tradebot.adapters.kafka import KafkaBus


class PipelineSettings(ServiceSettings):
    """Where Kafka and Redis are, and the cost model the strategy and the paper broker share."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", min_length=3, description="Kafka bootstrap servers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How the clients talk to Kafka: SASL_SSL for a managed Kafka (login over TLS).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="The SASL login mechanism (SASL_* protocols only)."
    )
    kafka_sasl_username: str | None = Field(
        default=None, min_length=1, description="The SASL user (required with SASL_* protocols)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        min_length=1,
        description="The SASL password (required with SASL_* protocols); never shown.",
    )
    kafka_ssl_ca_file: FilePath | None = Field(
        default=None,
        description="PEM file of the CA that signed the brokers' certificates (unset: the system's CAs).",
    )
    kafka_ssl_ca_pem: SecretStr | None = Field(
        default=None,
        description="The same CA as PEM text, for pods configured by environment only (the strategies' shared env).",
    )
    redis_url: SecretUrl = Field(
        default=SecretUrl("redis://127.0.0.1:6379/0"),
        description="Redis URL (`rediss://` for TLS, `redis://user:pw@host` for an ACL user); the password is masked wherever settings are shown.",
    )
    redis_ssl_ca_file: FilePath | None = Field(
        default=None,
        description="PEM file of the CA that signed Redis' certificate (rediss:// only; unset: the system's CAs).",
    )
    redis_ssl_ca_pem: SecretStr | None = Field(
        default=None, description="The same CA as PEM text, for pods configured by environment only."
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
    kafka_session_timeout_ms: int = Field(
        default=DEFAULT_SESSION_TIMEOUT_MS,
        ge=6_000,  # the brokers' group.min.session.timeout.ms by default
        le=1_800_000,  # and their group.max.session.timeout.ms
        description="How long a consumer that stopped (a killed pod) keeps its partitions before its group moves them.",
    )
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
    def _security_consistent(self) -> PipelineSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol.endswith("SSL")
        if sasl and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise ValueError(
                f"TRADEBOT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs"
                " TRADEBOT_KAFKA_SASL_USERNAME and TRADEBOT_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username is not None or self.kafka_sasl_password is not None):
            raise ValueError(
                "TRADEBOT_KAFKA_SASL_USERNAME/PASSWORD are set but TRADEBOT_KAFKA_SECURITY_PROTOCOL is"
                f" {self.kafka_security_protocol}: set it to SASL_SSL (or SASL_PLAINTEXT) so they are used"
            )
        if self.kafka_ssl_ca_file is not None and self.kafka_ssl_ca_pem is not None:
            raise ValueError("set one of TRADEBOT_KAFKA_SSL_CA_FILE and TRADEBOT_KAFKA_SSL_CA_PEM, not both")
        if not tls and (self.kafka_ssl_ca_file is not None or self.kafka_ssl_ca_pem is not None):
            raise ValueError(
                f"a Kafka CA is set but TRADEBOT_KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}"
                " (no TLS): use SASL_SSL or SSL"
            )
        if self.redis_ssl_ca_file is not None and self.redis_ssl_ca_pem is not None:
            raise ValueError("set one of TRADEBOT_REDIS_SSL_CA_FILE and TRADEBOT_REDIS_SSL_CA_PEM, not both")
        rediss = self.redis_url.get_secret_value().startswith("rediss://")
        if not rediss and (self.redis_ssl_ca_file is not None or self.redis_ssl_ca_pem is not None):
            raise ValueError("a Redis CA is set but TRADEBOT_REDIS_URL is not rediss:// (TLS)")
        return self

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings for the security protocol, login and CA (empty for PLAINTEXT)."""
        config = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_sasl_username is not None and self.kafka_sasl_password is not None:
            config |= {
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            }
        if self.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_file)
        if self.kafka_ssl_ca_pem is not None:
            config["ssl.ca.pem"] = self.kafka_ssl_ca_pem.get_secret_value()
        return config

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
    return _kafka_bus(settings)


def _kafka_bus(settings: PipelineSettings) -> KafkaBus:
    from tradebot.adapters.kafka import KafkaBus

    return KafkaBus(
        settings.kafka_bootstrap,
        client_config=settings.kafka_client_config(),
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        refusal_hint=_kafka_refusal_hint(settings),
        session_timeout_ms=settings.kafka_session_timeout_ms,
    )


def _kafka_refusal_hint(settings: PipelineSettings) -> str:
    """What to check when the brokers refuse the connection, by the settings' names."""
    checks = []
    if settings.kafka_sasl_username is not None:
        checks.append(
            f"TRADEBOT_KAFKA_SASL_USERNAME ({settings.kafka_sasl_username}), TRADEBOT_KAFKA_SASL_PASSWORD"
            f" and TRADEBOT_KAFKA_SASL_MECHANISM ({settings.kafka_sasl_mechanism})"
        )
    if settings.kafka_security_protocol.endswith("SSL"):
        checks.append(
            "TRADEBOT_KAFKA_SSL_CA_FILE / TRADEBOT_KAFKA_SSL_CA_PEM (the CA of the brokers' certificates)"
        )
    return f"check {' and '.join(checks)}" if checks else ""


def redis_store(settings: PipelineSettings) -> Store:
    from tradebot.adapters.redis_store import RedisStore

    ca_file, ca_pem = settings.redis_ssl_ca_file, settings.redis_ssl_ca_pem
    return RedisStore(
        settings.redis_url.get_secret_value(),
        ssl_ca_file=None if ca_file is None else str(ca_file),
        ssl_ca_pem=None if ca_pem is None else ca_pem.get_secret_value(),
        prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_seconds,
        connect_timeout_s=settings.redis_connect_timeout_seconds,
        stream_maxlen=settings.redis_stream_maxlen,
    )


def kafka_ready(settings: PipelineSettings) -> ReadinessCheck:
    """The readiness check of Kafka: with a login or TLS configured, an authenticated metadata request
    (an open port says nothing about the credentials; a refusal is logged with its reason and the settings
    to check); else `kafka_reachable`, the TCP check that costs the brokers nothing."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return kafka_reachable(settings)
    bus: KafkaBus | None = None

    async def logged_in() -> bool:
        nonlocal bus
        if bus is None:  # made on first use: the check is built before the service's event loop runs
            bus = _kafka_bus(settings)
        await asyncio.to_thread(bus.check_connection)
        return True

    return logged_in


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
    app = create_service_app(settings, readiness_checks={"redis": store.ping, "kafka": kafka_ready(settings)})

    async def service(shutdown: ShutdownEvent) -> None:
        bus = kafka_bus(settings)
        try:
            await main(settings, Wiring(bus, store, app.state.registry, readiness_of(app), shutdown))
        finally:
            bus.close()
            await store.close()

    return run_service(service, settings, app=app)
