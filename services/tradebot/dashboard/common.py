"""What both pages share: settings, the API client, error banners."""

from __future__ import annotations

import streamlit as st

from tradebot.dashboard.client import ApiClient, ApiUnavailable
from tradebot.dashboard.settings import DashboardSettings
from tradebot.kit.settings import SettingsError, load_settings

TOKEN_KEY = "api_token_input"


def load_dashboard_settings() -> DashboardSettings | None:
    """The settings from the environment; on a bad value, an error banner and None (never a traceback)."""
    try:
        return load_settings(DashboardSettings)
    except SettingsError as exc:
        st.error(f"Configuration error: {exc}")
        return None


def api_token(settings: DashboardSettings) -> str | None:
    """The halt/resume token: TRADEBOT_API_TOKEN, else what was typed into the sidebar."""
    if settings.api_token is not None and settings.api_token.get_secret_value():
        return settings.api_token.get_secret_value()
    typed = st.session_state.get(TOKEN_KEY)
    return typed.strip() or None if isinstance(typed, str) else None


def client(settings: DashboardSettings, token: str | None = None) -> ApiClient:
    return ApiClient(settings.api_url, token=token, timeout=settings.api_timeout_seconds)


def show_api_error(exc: ApiUnavailable, settings: DashboardSettings) -> None:
    st.error(f"{exc.message} — retrying in {settings.refresh_seconds:g} s", icon="⚠️")
