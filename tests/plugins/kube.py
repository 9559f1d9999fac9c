"""A real Kubernetes API server for the tests, envtest style: etcd + kube-apiserver, plus
kube-controller-manager when it is built. No kubelet, so pods are created but never run.

The binaries come from `make tools` (`.ci/tools/k8s.sh`), which pins their versions.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.plugins._proc import (
    REPO_ROOT,
    ServerProcess,
    eventually,
    find_tool,
    free_port,
    http_ok,
    require_tool,
)

K8S_SCRIPT = REPO_ROOT / ".ci" / "tools" / "k8s.sh"

# What kube-controller-manager runs: object lifecycle only, since nothing would run a pod.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "deployment",
    "replicaset",
    "job",
    "cronjob",
    "statefulset",
)


def pinned_version(name: str) -> str:
    """The version `.ci/tools/k8s.sh` pins, e.g. `pinned_version("KUBERNETES")` -> "v1.32.13"."""
    match = re.search(rf"^{name}_VERSION=(v\S+)", K8S_SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise LookupError(f"{K8S_SCRIPT} pins no {name}_VERSION")
    return match.group(1)


@dataclass(frozen=True)
class KubeCluster:
    """A running API server and an admin kubeconfig for it."""

    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    kubectl_path: Path
    cache_dir: Path
    # Controllers kube-controller-manager runs; empty when it is not running.
    controllers: tuple[str, ...]

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as cluster admin; never raises on a non-zero exit (check `returncode`)."""
        return subprocess.run(
            [
                str(self.kubectl_path),
                f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.cache_dir}",  # kubectl's discovery cache stays in the tmp dir
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _write_pki(pki: Path) -> None:
    """A throwaway CA, a serving cert for 127.0.0.1/localhost and a service-account signing key."""
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default\n"
        "extendedKeyUsage=serverAuth\n"
    )
    for command in (
        "ecparam -name prime256v1 -genkey -noout -out ca.key",
        "req -x509 -new -key ca.key -subj /CN=tradebot-test-ca -days 2 -out ca.crt",
        "ecparam -name prime256v1 -genkey -noout -out apiserver.key",
        "req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr",
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext"
        " -out apiserver.crt",
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key",
        "pkey -in sa.key -pubout -out sa.pub",
    ):
        _openssl(*command.split(), cwd=pki)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str = "admin") -> None:
    """A kubeconfig for `server` that authenticates as `user` with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _etcd_argv(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    argv = [
        str(etcd),
        "--name=test",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=test={peer_url}",
        "--log-level=warn",
    ]
    help_text = subprocess.run([str(etcd), "--help"], capture_output=True, text=True, check=False)
    if "--unsafe-no-fsync" in help_text.stdout + help_text.stderr:
        argv.append("--unsafe-no-fsync")  # throwaway data: spare the shared disk the fsyncs
    return argv


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeCluster]:
    """etcd + kube-apiserver (+ kube-controller-manager when built) on free 127.0.0.1 ports."""
    etcd = require_tool("etcd")
    apiserver = require_tool("kube-apiserver")
    kubectl = require_tool("kubectl")
    controller_manager = find_tool("kube-controller-manager")
    if controller_manager is None and os.environ.get("CI") == "true":
        pytest.fail("kube-controller-manager is not installed: run `make tools`", pytrace=False)

    root = Path(tempfile.mkdtemp(prefix="tradebot-kube-"))
    processes: list[ServerProcess] = []
    try:
        pki = root / "pki"
        pki.mkdir()
        _write_pki(pki)
        token = secrets.token_urlsafe(24)
        (root / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')

        client_port, peer_port = free_port(), free_port()
        etcd_process = ServerProcess("etcd", _etcd_argv(etcd, root / "etcd", client_port, peer_port), root)
        processes.append(etcd_process)
        etcd_process.wait_until("etcd health", lambda: http_ok(f"http://127.0.0.1:{client_port}/health"))

        secure_port = free_port()
        server = f"https://127.0.0.1:{secure_port}"
        apiserver_process = ServerProcess(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={secure_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={root / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # Nothing mints service-account tokens for pods here, as in controller-runtime's envtest.
                "--disable-admission-plugins=ServiceAccount",
            ],
            root,
        )
        processes.append(apiserver_process)
        ca_file = pki / "ca.crt"
        apiserver_process.wait_until(
            "/readyz ok", lambda: http_ok(f"{server}/readyz", token=token, ca_file=ca_file)
        )

        kubeconfig = root / "kubeconfig"
        write_kubeconfig(kubeconfig, server, ca_file, token)
        cache_dir = root / "kubectl-cache"
        cluster = KubeCluster(
            kubeconfig=kubeconfig,
            server=server,
            token=token,
            ca_file=ca_file,
            kubectl_path=kubectl,
            cache_dir=cache_dir,
            controllers=CONTROLLERS if controller_manager is not None else (),
        )
        if controller_manager is not None:
            manager_process = ServerProcess(
                "kube-controller-manager",
                [
                    str(controller_manager),
                    f"--kubeconfig={kubeconfig}",
                    f"--controllers={','.join(CONTROLLERS)}",
                    "--leader-elect=false",
                    "--secure-port=0",  # no health endpoint needed: readiness is checked through the API
                ],
                root,
            )
            processes.append(manager_process)
            # The serviceaccount controller's first act proves the controllers are running.
            manager_process.wait_until(
                "default service account",
                lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
            )
        yield cluster
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm binary `make tools` built."""
    return require_tool("helm")


def kubectl_json(cluster: KubeCluster, *args: str) -> dict[str, object]:
    """`kubectl ... -o json`, parsed; raises with kubectl's stderr when it fails."""
    result = cluster.kubectl(*args, "-o", "json")
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def wait_crd_established(cluster: KubeCluster, name: str, timeout: float = 60.0) -> None:
    """Wait until CRD `name` is Established. `kubectl wait --for=condition=Established` right after the
    create fails at once ("status.conditions accessor error: <nil>") when the API server has not yet
    written any condition, so poll the object instead."""

    def established() -> bool:
        result = cluster.kubectl("get", "crd", name, "-o", "json")
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    eventually(f"CRD {name} to be Established", established, timeout=timeout)
