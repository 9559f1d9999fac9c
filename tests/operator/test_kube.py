"""`Kube` against a real API server: however many handlers ask at once, at most `max_in_flight` requests are
under way, and the rest wait their turn instead of failing on the HTTP client's pool (issue 17.7: a thousand
TradingStrategies applied together had their handlers fail with PoolTimeout and retried, for ever)."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from tests.plugins.kube import KubeCluster
from tradebot.operator.kube import Kube

REQUESTS = 400


class CountingTransport(httpx.AsyncBaseTransport):
    """The real transport, counting the requests handed to it and not yet answered (headers): those waiting for
    one of its pooled connections too."""

    def __init__(self, cluster: KubeCluster) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cluster.ca_file)))
        self.now = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self.now -= 1

    def __deepcopy__(self, memo: dict[int, object]) -> CountingTransport:
        return self  # lightkube copies its connection settings; this one counts, so it stays one

    async def aclose(self) -> None:
        await self._inner.aclose()


async def ask_at_once(cluster: KubeCluster, max_in_flight: int) -> tuple[list[object], int]:
    """REQUESTS reads at once of ConfigMaps that do not exist, through a client whose pool gives up after 1 ms:
    (what each read answered or raised, the most requests under way at once)."""
    transport = CountingTransport(cluster)
    client = AsyncClient(
        KubeConfig.from_file(cluster.kubeconfig),
        timeout=httpx.Timeout(30.0, pool=0.001),
        transport=transport,
    )
    kube = Kube(client, max_in_flight)
    try:
        answers: list[object] = await asyncio.gather(
            *(kube.get("v1", "ConfigMap", f"absent-{i}", "default") for i in range(REQUESTS)),
            return_exceptions=True,
        )
    finally:
        await kube.close()
    return answers, transport.most


@pytest.mark.parametrize("max_in_flight", [4, 32])
async def test_requests_past_the_bound_wait_instead_of_failing(
    kube_apiserver: KubeCluster, max_in_flight: int
) -> None:
    answers, most = await ask_at_once(kube_apiserver, max_in_flight)
    assert answers == [None] * REQUESTS  # every read answered: 404, so None
    assert 1 < most <= max_in_flight


async def test_unbounded_the_pool_refuses_what_the_bound_lets_wait(kube_apiserver: KubeCluster) -> None:
    """The failure the bound prevents, on the same server: more at once than the client's 100 connections."""
    answers, most = await ask_at_once(kube_apiserver, REQUESTS)
    assert most > 100  # handed to the transport at once, where its pool of 100 connections queues them
    refused = [a for a in answers if isinstance(a, httpx.PoolTimeout)]
    assert refused, "with no bound, some reads wait past the pool timeout"
