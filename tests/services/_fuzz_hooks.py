"""Schemathesis hooks for the API's fuzz test (loaded through SCHEMATHESIS_HOOKS): what the OpenAPI document
can only say in prose, the fuzzer is told here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import schemathesis


def _when(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("z", "Z"))
    except ValueError:
        return None


@schemathesis.hook
def filter_query(ctx: Any, query: dict[str, Any] | None) -> bool:
    """A range with `since` after `until` is refused (422, as the parameter's description says): not a
    request the schema alone makes valid."""
    if not query or "since" not in query or "until" not in query:
        return True
    since, until = _when(query["since"]), _when(query["until"])
    if since is None or until is None or since.tzinfo is None or until.tzinfo is None:
        return True
    return since <= until
