"""Helpers shared by the tests on the local cluster (the fixtures live in tests/plugins/cluster.py)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from tests.plugins.cluster import NAMESPACE, LocalCluster


def service_url(cluster: LocalCluster, component: str, namespace: str = NAMESPACE) -> str:
    """http://<ClusterIP>:<port> of the release's Service for `component` (the host reaches ClusterIPs)."""
    services = cluster.get("services", "-n", namespace, "-l", f"app.kubernetes.io/component={component}")
    service = next(s for s in services["items"] if s["spec"].get("clusterIP") not in (None, "None"))
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def http_get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answered."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str, *, token: str | None = None) -> Any:
    status, body = http_get(url, token=token)
    return json.loads(body) if status == 200 else None


def api_token(cluster: LocalCluster, namespace: str = NAMESPACE) -> str:
    secret = cluster.get("secret", "tradebot", "-n", namespace)
    return base64.b64decode(secret["data"]["api-token"]).decode()
