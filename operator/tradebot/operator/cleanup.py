"""`tradebot operator --delete-strategies`: the chart's pre-delete hook.

kopf puts a finalizer on every TradingStrategy (its daemon needs one), and only the running operator
removes it. `helm uninstall` deletes the operator, its RBAC and the chart's TradingStrategy together, so
without this hook the TradingStrategy (and the Deployment it owns) would wait forever for a finalizer
nobody removes. The hook runs before Helm deletes anything: it deletes the release's TradingStrategies
and waits until the operator has finalized them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from tradebot.core.errors import TradebotError
from tradebot.operator import render
from tradebot.operator.kube import TradingStrategyResource

log = logging.getLogger("tradebot.operator.cleanup")


class StrategiesRemainError(TradebotError):
    """Some TradingStrategies still exist at the deadline (no operator removed their finalizers)."""


def parse_selector(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments as a label selector; an empty selector would match every TradingStrategy."""
    selector: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"a selector is KEY=VALUE, not {pair!r}")
        selector[key] = value
    if not selector:
        raise ValueError("--delete-strategies needs at least one --selector KEY=VALUE")
    return selector


async def _names(client: AsyncClient, namespace: str, selector: Mapping[str, str]) -> list[str]:
    return sorted(
        [
            obj.metadata.name
            async for obj in client.list(TradingStrategyResource, namespace=namespace, labels=dict(selector))
            if obj.metadata is not None and obj.metadata.name is not None
        ]
    )


async def delete_strategies(
    client: AsyncClient,
    namespace: str,
    selector: Mapping[str, str],
    *,
    wait_seconds: float,
    poll_interval: float = 1.0,
) -> list[str]:
    """Delete the TradingStrategies of `namespace` matching `selector`; return their names once all are gone.

    Raises StrategiesRemainError when some still exist after `wait_seconds`."""
    names = await _names(client, namespace, selector)
    for name in names:
        try:
            await client.delete(TradingStrategyResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:  # already gone is what we want
                raise
        log.info("deleting", extra={"namespace": namespace, "kind": render.KIND, "strategy": name})
    deadline = time.monotonic() + wait_seconds
    remaining = await _names(client, namespace, selector)
    while remaining:
        if time.monotonic() >= deadline:
            raise StrategiesRemainError(
                f"{render.KIND} {', '.join(remaining)} in {namespace} still exist after {wait_seconds:g}s: "
                "is the operator running? It removes their finalizers"
            )
        await asyncio.sleep(poll_interval)
        remaining = await _names(client, namespace, selector)
    log.info("deleted", extra={"namespace": namespace, "kind": render.KIND, "strategies": names})
    return names


async def delete_all(namespaces: Sequence[str], selector: Mapping[str, str], *, wait_seconds: float) -> None:
    # The in-cluster ServiceAccount in a pod, KUBECONFIG elsewhere: as the operator connects.
    client = AsyncClient(field_manager=render.MANAGED_BY)
    try:
        for namespace in namespaces:
            await delete_strategies(client, namespace, selector, wait_seconds=wait_seconds)
    finally:
        await client.close()
