"""Operator configuration from `TRADEBOT_OPERATOR_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADEBOT_OPERATOR_", frozen=True, extra="ignore")

    strategy_image: str = Field(
        "ghcr.io/tradebot/tradebot:0.1.0",
        description="Image of strategy and backtest pods unless spec.image is set",
    )
    shared_env_secret: str | None = Field(
        "tradebot-shared-env",
        description="Secret with the bus/store endpoints (TRADEBOT_KAFKA_BOOTSTRAP, TRADEBOT_REDIS_URL)",
    )
    shared_env_namespace: str | None = Field(
        None,
        description="Namespace of the shared-env Secret (the release's); strategies elsewhere get a copy of it",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: cluster-wide"
    )
    resync_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="How often each strategy's objects are compared with its spec even when no watch event came",
    )
    api_concurrency: int = Field(
        32,
        ge=1,
        le=100,
        description="API requests under way at once; the rest wait (the HTTP client pools 100 connections)",
    )
    host: str = Field("0.0.0.0", description="Interface of the liveness and metrics endpoints")
    liveness_port: int = Field(8080, ge=1, le=65535, description="kopf's liveness endpoint /healthz")
    metrics_port: int = Field(9090, ge=1, le=65535, description="Prometheus /metrics")
