"""Service settings: one frozen, validated pydantic-settings class per service, read from `TRADEBOT_*`."""

from __future__ import annotations

import json
import re
import sys
import types
from enum import Enum, StrEnum
from typing import Any, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import pydantic_settings
from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradebot.core.errors import TradebotError

__all__ = [
    "SETTINGS_ERROR_EXIT_CODE",
    "LogLevel",
    "SecretUrl",
    "ServiceSettings",
    "SettingsError",
    "comma_list",
    "load_settings",
    "load_settings_or_exit",
]

ENV_PREFIX = "TRADEBOT_"
ENV_NESTED_DELIMITER = "__"
# Exit code for bad configuration, as argparse uses for bad arguments.
SETTINGS_ERROR_EXIT_CODE = 2

# A field with one of these words in its name holds a secret and must be typed SecretStr/SecretBytes.
_SECRET_NAME = re.compile(r"password|passwd|secret|token|api_key|apikey|credential|private_key")
# A URL of a data store or broker may carry a password (`redis://:pw@host`): it must be a SecretUrl.
_CREDENTIAL_URL_NAME = re.compile(r"(redis|kafka|database|db|postgres|amqp|mongo)_(url|dsn)$")
_MASK = "**********"


class SecretUrl(SecretStr):
    """A URL that may carry a password: shown with the password masked (`redis://:**********@host:6379/0`),
    so logs still say where a service connects; serialised to JSON fully masked, as every secret is."""

    def _display(self) -> str:
        return masked_url(self.get_secret_value())


def masked_url(url: str) -> str:
    """`url` with the password of its user-info part (if any) replaced by the mask."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: show nothing of it
        return _MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    masked_netloc = (
        f"{user}:{_MASK}@{host}" if colon else f"{_MASK}@{host}"
    )  # `redis://pw@host`: pw is the password
    return parts._replace(netloc=masked_netloc).geturl()


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class SettingsError(TradebotError):
    """Invalid configuration; the message is one line naming each offending environment variable."""

    exit_code = SETTINGS_ERROR_EXIT_CODE


class ServiceSettings(BaseSettings):
    """Settings every service shares. Subclass it, add fields, override defaults (e.g. `service_name`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    service_name: str = Field(
        default="tradebot",
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name in logs and metrics labels (lower-case, digits, dashes).",
    )
    log_level: LogLevel = LogLevel.INFO
    log_json: bool = Field(
        default=True, description="One JSON object per line; false for human-readable text."
    )
    http_host: str = Field(default="0.0.0.0", min_length=1)
    http_port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Port of the service's HTTP server: its own routes (the API's) and, unless metricsPort "
        "is set, /livez, /readyz and /metrics.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of /livez, /readyz and /metrics alone, so a NetworkPolicy can open them to "
        "Prometheus without opening the API; httpPort then serves only the service's own routes (a service "
        "with none, like the feed, opens no other port). Unset: they share httpPort.",
    )
    shutdown_grace_seconds: float = Field(
        default=25.0,
        gt=0,
        le=3600,
        description="Time to finish work after SIGTERM; keep it below the pod's terminationGracePeriodSeconds.",
    )

    @field_validator("metrics_port")
    @classmethod
    def _own_metrics_port(cls, port: int | None, info: ValidationInfo) -> int | None:
        if port is not None and port == info.data.get("http_port"):
            raise ValueError(
                f"{port} is the http port too: give metrics a port of their own or leave it unset"
            )
        return port

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            if _SECRET_NAME.search(name) and _is_plain_str(field.annotation):
                raise TypeError(
                    f"{cls.__name__}.{name} looks like a secret: type it SecretStr so it is never logged"
                )
            if _CREDENTIAL_URL_NAME.search(name) and not _mentions_secret(field.annotation):
                raise TypeError(
                    f"{cls.__name__}.{name} is a URL that may hold a password: type it SecretUrl so it is never logged"
                )

    def safe_dump(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets masked (a SecretUrl shows all but its password): fit
        for a start-up log line."""
        dumped = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretUrl):
                dumped[name] = str(value)
        return dumped

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The environment variable that sets `field_name`."""
        return _env_name(cls, (field_name,))

    def to_env(self) -> dict[str, str | None]:
        """The environment from which this class reads back these very settings: each field's variable
        and its value as text, None for a value of None (the variable must then be unset). How `tradebot
        up` gives a service process the settings it would run the service with in `--embedded`."""
        return {type(self).env_name(name): _env_text(getattr(self, name)) for name in type(self).model_fields}


S = TypeVar("S", bound=ServiceSettings)


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated setting (`TRADEBOT_SYMBOLS`, `TRADEBOT_CORS_ORIGINS`...): each
    stripped, empty ones dropped, in order."""
    return [item.strip() for item in text.split(",") if item.strip()]


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Read `cls` from the environment (`overrides` win, e.g. CLI flags); raise `SettingsError` if invalid."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(cls, exc)) from None
    except pydantic_settings.SettingsError as exc:
        # Raised for undecodable complex values (e.g. a list field that is not JSON).
        raise SettingsError(f"{cls.__name__}: {exc}") from None


def load_settings_or_exit(cls: type[S], **overrides: Any) -> S:
    """`load_settings`, but print the one-line error to stderr and exit 2: what a service's start does."""
    try:
        return load_settings(cls, **overrides)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def _describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        location = tuple(str(part) for part in error["loc"])
        where = _env_name(cls, location) if location else cls.__name__
        problem = f"{where}: {error['msg']}"
        # A rule over several fields (a model validator) has the whole input as its input: never echoed,
        # as it holds every secret the others do.
        if error["type"] != "missing" and location:
            shown = _MASK if _is_secret(cls, location) else _shorten(repr(error["input"]))
            problem += f" (got {shown})"
        problems.append(problem)
    return "; ".join(problems)


def _env_name(cls: type[BaseSettings], location: tuple[str, ...]) -> str:
    head = location[0]
    field = cls.model_fields.get(head)
    aliases = _aliases(field) if field is not None else []
    if aliases:
        head = aliases[0]  # pydantic-settings reads an aliased field from its alias, without the prefix
    elif field is not None or _field_by_alias(cls, head) is None:
        head = f"{cls.model_config.get('env_prefix', '')}{head}"
    return ENV_NESTED_DELIMITER.join((head, *location[1:])).upper()


def _aliases(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    names = [choice.path[0] if isinstance(choice, AliasPath) else choice for choice in choices]
    return [name for name in names if isinstance(name, str)]


def _field_by_alias(cls: type[BaseSettings], key: str) -> FieldInfo | None:
    for field in cls.model_fields.values():
        if key.lower() in (alias.lower() for alias in _aliases(field)):
            return field
    return None


def _is_secret(cls: type[BaseSettings], location: tuple[str, ...]) -> bool:
    if not location:
        return False
    field = cls.model_fields.get(location[0]) or _field_by_alias(cls, location[0])
    named_like_secret = _SECRET_NAME.search(location[-1].lower()) is not None
    if named_like_secret or field is None:
        return named_like_secret
    return _mentions_secret(field.annotation) or _nested_is_secret(field.annotation, location[1:])


def _nested_is_secret(annotation: Any, location: tuple[str, ...]) -> bool:
    """Whether the value at `location` inside a nested model (a list item's, e.g. a notifier sink's `url`)
    is or holds a secret: its error then shows no value either (a whole sink's error would show its URL)."""
    if not location:
        return _holds_secret(annotation)
    head, rest = location[0], location[1:]
    if head.isdigit():  # an index into a list
        return any(_nested_is_secret(arg, rest) for arg in get_args(annotation))
    for model in _models_in(annotation):
        field = model.model_fields.get(head)
        if field is not None and _nested_is_secret(field.annotation, rest):
            return True
    return False


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _holds_secret(annotation: Any) -> bool:
    """A secret type, or a model (list, union...) with a secret among its fields, however deep."""
    if _mentions_secret(annotation):
        return True
    return any(
        _holds_secret(field.annotation)
        for model in _models_in(annotation)
        for field in model.model_fields.values()
    )


def _mentions_secret(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    return any(_mentions_secret(arg) for arg in get_args(annotation))


def _is_plain_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(arg is str for arg in get_args(annotation))
    return False


def _env_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, list | tuple) and any(isinstance(item, BaseModel) for item in value):
        # Models that may hold secrets (the notifier's sinks): their values, which model_dump would mask.
        return json.dumps([_revealed(item) for item in value])
    if isinstance(value, dict | list | tuple | set | frozenset):
        return json.dumps(value if isinstance(value, dict | list | tuple) else sorted(value))
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _revealed(value: Any) -> Any:
    """`value` as plain JSON data with every secret's real value (what reads it back needs)."""
    if isinstance(value, BaseModel):
        return {name: _revealed(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode()
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
