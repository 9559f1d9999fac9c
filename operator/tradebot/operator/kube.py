"""The operator's only door to the API server: reads, server-side apply when something differs, status patches.

Every write goes through here so it is counted (`tradebot_operator_api_writes_total`) and skipped when the
object already is as wanted: an idle operator writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from tradebot.operator import render
from tradebot.operator.metrics import API_WRITES

FIELD_MANAGER = render.MANAGED_BY

TradingStrategyResource = create_namespaced_resource(
    render.GROUP, render.VERSION, render.KIND, render.PLURAL, verbs=None
)


class Kube:
    """`max_in_flight` bounds the requests under way at once. A thousand TradingStrategies applied together
    start a thousand daemons: unbounded, their reads and writes queued for the HTTP client's 100 pooled
    connections and failed after its 10 s pool timeout, so every handler was retried, again all at once, and
    hundreds of Deployments were never made. Bounded, the rest wait their turn here, with no timeout."""

    def __init__(self, client: AsyncClient, max_in_flight: int = 32) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(max_in_flight)

    async def close(self) -> None:
        await self._client.close()

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        resource = _resource_class(api_version, kind)
        try:
            async with self._slots:
                obj = await self._client.get(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return _to_dict(obj)

    async def apply_if_changed(self, manifest: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Server-side apply `manifest` unless the live object already holds every field we set.

        Returns whether it applied, and the object as the API server holds it now."""
        meta = manifest["metadata"]
        existing = await self.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta["namespace"])
        if existing is not None and not render.differs(manifest, existing):
            return False, existing
        async with self._slots:
            applied = await self._client.apply(
                codecs.from_dict(dict(manifest)), field_manager=FIELD_MANAGER, force=True
            )
        API_WRITES.labels(verb="apply", kind=manifest["kind"]).inc()
        return True, _to_dict(applied)

    async def create_if_absent(self, manifest: Mapping[str, Any]) -> bool:
        meta = manifest["metadata"]
        if (
            await self.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta["namespace"])
            is not None
        ):
            return False
        try:
            async with self._slots:
                await self._client.create(codecs.from_dict(dict(manifest)), field_manager=FIELD_MANAGER)
        except ApiError as exc:
            if exc.status.code == 409:  # created meanwhile by a concurrent reconcile: same object by name
                return False
            raise
        API_WRITES.labels(verb="create", kind=manifest["kind"]).inc()
        return True

    async def pod_log(self, name: str, namespace: str, container: str) -> str:
        """A pod's log (a sweep shard's whole table is its stdout); a read, so not counted as a write."""
        async with self._slots:
            lines = [line async for line in self._client.log(name, namespace=namespace, container=container)]
        return "".join(lines)

    async def get_strategy(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            async with self._slots:
                obj = await self._client.get(TradingStrategyResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return _to_dict(obj)

    async def patch_strategy_status(
        self, name: str, namespace: str, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> None:
        """Merge-patch the status; with `resource_version`, only if the object is still that version (else 409)."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with self._slots:
            await self._client.patch(
                TradingStrategyResource.Status,
                name,
                body,
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        API_WRITES.labels(verb="patch", kind=f"{render.KIND}/status").inc()


def _resource_class(api_version: str, kind: str) -> Any:
    if api_version == f"{render.GROUP}/{render.VERSION}" and kind == render.KIND:
        return TradingStrategyResource
    group, _, version = api_version.rpartition("/")
    module = {
        ("", "v1"): "lightkube.resources.core_v1",
        ("apps", "v1"): "lightkube.resources.apps_v1",
        ("batch", "v1"): "lightkube.resources.batch_v1",
    }[(group, version)]
    return getattr(__import__(module, fromlist=[kind]), kind)


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    result = obj.to_dict()
    assert isinstance(result, dict)
    return result
