"""Settings: validated from TRADEBOT_* variables, errors name the variable, secrets never shown."""

from __future__ import annotations

import json

import pytest
from pydantic import Field, SecretStr, ValidationError

from tradebot.kit.settings import (
    LogLevel,
    ServiceSettings,
    SettingsError,
    comma_list,
    load_settings,
    load_settings_or_exit,
)


class FeedLikeSettings(ServiceSettings):
    service_name: str = "feed"
    kafka_bootstrap: str
    exchange_api_key: SecretStr = Field(min_length=8)
    batch_size: int = Field(default=100, gt=0)


def test_defaults_are_kubernetes_friendly() -> None:
    settings = load_settings(ServiceSettings)
    assert settings.service_name == "tradebot"
    assert settings.log_level is LogLevel.INFO
    assert settings.log_json is True
    assert settings.http_host == "0.0.0.0"
    assert 1 <= settings.http_port <= 65535
    assert settings.shutdown_grace_seconds == 25.0  # below the pod's default terminationGracePeriod of 30s


def test_values_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_HTTP_PORT", "9100")
    monkeypatch.setenv("TRADEBOT_LOG_LEVEL", "debug")
    monkeypatch.setenv("TRADEBOT_LOG_JSON", "false")
    monkeypatch.setenv("TRADEBOT_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("TRADEBOT_EXCHANGE_API_KEY", "k3y-k3y-k3y")
    settings = load_settings(FeedLikeSettings)
    assert settings.http_port == 9100
    assert settings.log_level is LogLevel.DEBUG
    assert settings.log_json is False
    assert settings.kafka_bootstrap == "broker:9092"
    assert settings.exchange_api_key.get_secret_value() == "k3y-k3y-k3y"
    assert settings.service_name == "feed"


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_HTTP_PORT", "9100")
    assert load_settings(ServiceSettings, http_port=9200).http_port == 9200


def test_port_out_of_range_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_HTTP_PORT", "70000")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings)
    assert (
        str(raised.value) == "TRADEBOT_HTTP_PORT: Input should be less than or equal to 65535 (got '70000')"
    )


def test_every_problem_is_reported_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_LOG_LEVEL", "loud")
    monkeypatch.setenv("TRADEBOT_SHUTDOWN_GRACE_SECONDS", "-1")
    monkeypatch.setenv("TRADEBOT_BATCH_SIZE", "many")
    with pytest.raises(SettingsError) as raised:
        load_settings(FeedLikeSettings)
    message = str(raised.value)
    assert "\n" not in message
    problems = dict(problem.split(": ", 1) for problem in message.split("; "))
    assert set(problems) == {
        "TRADEBOT_LOG_LEVEL",
        "TRADEBOT_SHUTDOWN_GRACE_SECONDS",
        "TRADEBOT_KAFKA_BOOTSTRAP",
        "TRADEBOT_EXCHANGE_API_KEY",
        "TRADEBOT_BATCH_SIZE",
    }
    assert problems["TRADEBOT_LOG_LEVEL"].startswith("Input should be 'DEBUG', 'INFO'")
    assert problems["TRADEBOT_LOG_LEVEL"].endswith("(got 'LOUD')")
    assert problems["TRADEBOT_KAFKA_BOOTSTRAP"] == "Field required"
    assert problems["TRADEBOT_BATCH_SIZE"].endswith("(got 'many')")


def test_an_invalid_secret_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("TRADEBOT_EXCHANGE_API_KEY", "s3cr")
    with pytest.raises(SettingsError) as raised:
        load_settings(FeedLikeSettings)
    assert str(raised.value).startswith("TRADEBOT_EXCHANGE_API_KEY: ")
    assert "s3cr" not in str(raised.value)
    assert "**********" in str(raised.value)


def test_secrets_are_masked_in_repr_dumps_and_safe_dump() -> None:
    settings = load_settings(FeedLikeSettings, kafka_bootstrap="b:9092", exchange_api_key="hunter2-hunter2")
    for shown in (
        repr(settings),
        str(settings),
        json.dumps(settings.safe_dump()),
        settings.model_dump_json(),
    ):
        assert "hunter2" not in shown
    dumped = settings.safe_dump()
    assert dumped["exchange_api_key"] == "**********"
    assert dumped["kafka_bootstrap"] == "b:9092"
    assert dumped["log_level"] == "INFO"
    json.dumps(dumped)  # fit for a log line as is


def test_settings_are_frozen() -> None:
    settings = load_settings(ServiceSettings)
    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


def test_unknown_keys_are_rejected_with_their_variable_name() -> None:
    with pytest.raises(
        SettingsError, match=r"^TRADEBOT_HTTP_PROT: Extra inputs are not permitted \(got 80\)$"
    ):
        load_settings(ServiceSettings, http_prot=80)


def test_a_secret_typed_as_plain_str_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="redis_password looks like a secret"):

        class LeakySettings(ServiceSettings):
            redis_password: str | None = None


def test_an_aliased_field_is_named_by_its_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    class AliasedSettings(ServiceSettings):
        brokers: str = Field(validation_alias="KAFKA_BROKERS", min_length=3)

    monkeypatch.setenv("KAFKA_BROKERS", "x")
    with pytest.raises(SettingsError, match=r"^KAFKA_BROKERS: String should have at least 3 characters"):
        load_settings(AliasedSettings)
    assert AliasedSettings.env_name("brokers") == "KAFKA_BROKERS"
    assert AliasedSettings.env_name("http_port") == "TRADEBOT_HTTP_PORT"


def test_load_settings_or_exit_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRADEBOT_HTTP_PORT", "0")
    with pytest.raises(SystemExit) as raised:
        load_settings_or_exit(ServiceSettings)
    assert raised.value.code == 2
    assert capsys.readouterr().err == (
        "configuration error: TRADEBOT_HTTP_PORT: Input should be greater than or equal to 1 (got '0')\n"
    )


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("AAPL,MSFT", ["AAPL", "MSFT"]),
        (" AAPL , MSFT ,", ["AAPL", "MSFT"]),
        ("GOOG", ["GOOG"]),
        (",, ,", []),
        ("", []),
        ("b,a,b", ["b", "a", "b"]),
    ],
)
def test_a_comma_separated_setting_is_its_stripped_non_empty_items_in_order(
    text: str, items: list[str]
) -> None:
    assert comma_list(text) == items
