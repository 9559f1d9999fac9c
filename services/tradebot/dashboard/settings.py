"""Dashboard settings, read from `TRADEBOT_*` like every service's."""

from __future__ import annotations

from pydantic import Field, SecretStr

from tradebot.kit.settings import ServiceSettings


class DashboardSettings(ServiceSettings):
    service_name: str = "dashboard"
    api_url: str = Field(
        default="http://127.0.0.1:8000", min_length=1, description="Base URL of the tradebot API."
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for halt/resume for everyone who reaches the page; unset (the chart's default): "
        "read-only until someone types a token into the sidebar for their session.",
    )
    refresh_seconds: float = Field(default=2.0, gt=0, le=3600, description="Refresh period of the live page.")
    api_timeout_seconds: float = Field(default=5.0, gt=0, le=120, description="Timeout of each API request.")
    data_dir: str = Field(default="data", description="Folder whose CSV files the backtest page offers.")
    # A CSV takes about twice its size while parsed, and the page keeps its last uploads' bars: 32 MB leaves
    # the chart's 768Mi memory limit room for Streamlit itself. Raise it with the pod's limit.
    upload_max_mb: int = Field(
        default=32, ge=1, le=2048, description="Largest CSV the backtest page accepts for upload, in MB."
    )
