"""Item 7: `helm upgrade` with a changed value rolls the Deployments that value reaches (and only those);
`helm uninstall` leaves nothing of the release but the CRD. Runs last: it removes the release."""

from __future__ import annotations

from tests.plugins._proc import eventually
from tests.plugins.cluster import CHART, LOCAL_VALUES, NAMESPACE, RELEASE, LocalCluster

CRD = "tradingstrategies.tradebot.dev"


def templates(cluster: LocalCluster) -> dict[str, str]:
    """Deployment name -> its generation (any change of its spec bumps it)."""
    found = {}
    for deployment in cluster.get(
        "deployments", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}"
    )["items"]:
        found[deployment["metadata"]["name"]] = str(deployment["metadata"]["generation"])
    return found


def test_upgrade_rolls_what_changed_and_uninstall_leaves_only_the_crd(tradebot_release: LocalCluster) -> None:
    cluster = tradebot_release
    before = templates(cluster)
    api_pods = {
        p["metadata"]["uid"]
        for p in cluster.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=api")["items"]
    }
    upgrade = cluster.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(LOCAL_VALUES), "--reuse-values",
        "--set", "api.corsOrigins={http://localhost:8501}", "--wait", "--timeout", "5m",
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    after = templates(cluster)
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed == {"tradebot-api"}, (before, after)
    deployment = cluster.get("deployment", "tradebot-api", "-n", NAMESPACE)
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env.get("TRADEBOT_CORS_ORIGINS") == "http://localhost:8501", env
    new_pods = {
        p["metadata"]["uid"]
        for p in cluster.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=api")["items"]
        if not p["metadata"].get("deletionTimestamp")
    }
    assert new_pods
    assert not new_pods & api_pods  # the api pod was replaced

    uninstall = cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    assert uninstall.returncode == 0, uninstall.stderr

    def leftovers() -> list[str]:
        names = cluster.kubectl(
            "get", "all,configmaps,secrets,networkpolicies,poddisruptionbudgets,serviceaccounts,roles,rolebindings,"
            "tradingstrategies,jobs,cronjobs", "-n", NAMESPACE, "-o", "name",
        ).stdout.split()  # fmt: skip
        # What every namespace holds of its own, whoever installs into it.
        return [n for n in names if n not in ("configmap/kube-root-ca.crt", "serviceaccount/default")]

    left = eventually("nothing of the release left", lambda: not leftovers() or None, 180, 2.0)
    assert left
    cluster_wide = cluster.kubectl_ok(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    assert not cluster_wide.split(), cluster_wide
    assert cluster.kubectl("get", "crd", CRD).returncode == 0, "Helm keeps the CRD"
