#!/usr/bin/env bash
# `make cluster`: a real single-node Kubernetes on this machine, without Docker or a registry, then the
# chart installed as release tradebot in namespace tradebot. Idempotent: what already runs is reused.
#   up.sh            host set-up, containerd, etcd, control plane, kubelet, kube-proxy, kube-router,
#                    CoreDNS, the images imported, the chart installed
#   up.sh --no-chart the same without the chart (the tests install it themselves)
# The pieces come from .ci/tools/cluster.sh and .ci/cluster/images.sh; down.sh undoes everything.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE=$ROOT/.ci/cluster
INSTALL_CHART=true
[[ ${1:-} == --no-chart ]] && INSTALL_CHART=false

[[ $(id -u) -eq 0 ]] || die "a node needs root (kubelet, containerd, bridge, iptables)"
for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router helm \
	prometheus-operator; do
	[[ -x $BIN/$tool ]] || die "$BIN/$tool missing: run make cluster-tools"
done
command -v kubectl >/dev/null || die "kubectl missing: run make tools"
mkdir -p "$PKI" "$PIDS" "$LOGS" "$HOST" "$STATE/cni/net.d" "$STATE/containerd"
started=$SECONDS
step() { echo "cluster: $* ($((SECONDS - started))s)"; }

# wait_for WHAT TIMEOUT CMD...: polls CMD once a second; on time-out names what did not happen.
wait_for() {
	local what=$1 timeout=$2 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "no $what within ${timeout}s (logs: $LOGS)"
		sleep 1
	done
}

# start NAME CMD...: runs CMD in its own session with its log and pid file, unless NAME is alive.
start() {
	local name=$1
	shift
	if alive "$name"; then
		echo "cluster: $name running (pid $(cat "$PIDS/$name.pid"))"
		return
	fi
	echo "$1" >"$PIDS/$name.cmd"
	setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
	echo $! >"$PIDS/$name.pid"
}

# --- host: record, then change ---------------------------------------------------------------------
if [[ ! -f $HOST/sysctl.orig ]]; then
	for key in "${SYSCTLS[@]}"; do
		[[ -f /proc/sys/$key ]] && echo "$key=$(cat "/proc/sys/$key")"
	done >"$HOST/sysctl.orig"
	ls /var/run/netns 2>/dev/null >"$HOST/netns.orig" || : >"$HOST/netns.orig"
	nft list tables 2>/dev/null >"$HOST/nft-tables.orig" || : >"$HOST/nft-tables.orig"
	[[ -d /run/containerd ]] && touch "$HOST/run-containerd.existed"
fi
echo 1 >/proc/sys/net/ipv4/ip_forward
echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
if ! ip -4 addr show dev lo | grep -q "inet $NODE_IP/32"; then
	ip addr add "$NODE_IP/32" dev lo
	touch "$HOST/node-ip.added"
fi

# --- PKI and credentials (made once, kept with the state) --------------------------------------------
# sign NAME SUBJECT EXT: a key and a certificate for NAME signed by the cluster's CA, unless it exists.
sign() {
	[[ -f $PKI/$1.crt ]] && return
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$1.key" 2>/dev/null
	openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr"
	printf '%s\n' "$3" >"$PKI/$1.ext"
	openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
		-extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
}
if [[ ! -f $PKI/ca.crt ]]; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$PKI/ca.key" -subj /CN=tradebot-local-ca -days 3650 -out "$PKI/ca.crt"
fi
sign apiserver /CN=kube-apiserver "subjectAltName=IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN
extendedKeyUsage=serverAuth"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth,clientAuth"
# The Prometheus Operator takes a client certificate (it has no kubeconfig flag).
sign prometheus-operator "/O=system:masters/CN=prometheus-operator" "extendedKeyUsage=clientAuth"
if [[ ! -f $PKI/sa.key ]]; then
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
	openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
fi
if [[ ! -f $PKI/tokens.csv ]]; then
	# One bearer token per component, each with its own Kubernetes identity.
	for entry in "admin|system:masters" "system:kube-controller-manager|" "system:kube-scheduler|" \
		"system:kube-proxy|" "kube-router|system:masters"; do
		user=${entry%%|*} group=${entry#*|}
		echo "$(openssl rand -hex 24),$user,$user${group:+,\"$group\"}"
	done >"$PKI/tokens.csv.new"
	mv "$PKI/tokens.csv.new" "$PKI/tokens.csv"
fi

# kubeconfig FILE USER [CERT KEY]: a kubeconfig for USER's token (or a client certificate).
kubeconfig() {
	local file=$1 user=$2 token
	{
		echo "apiVersion: v1"
		echo "kind: Config"
		echo "clusters: [{name: tradebot-local, cluster: {server: 'https://$NODE_IP:6443', certificate-authority: '$PKI/ca.crt'}}]"
		echo "contexts: [{name: tradebot-local, context: {cluster: tradebot-local, user: '$user'}}]"
		echo "current-context: tradebot-local"
		if [[ $# -eq 4 ]]; then
			echo "users: [{name: '$user', user: {client-certificate: '$3', client-key: '$4'}}]"
		else
			token=$(awk -F, -v user="$user" '$2 == user {print $1}' "$PKI/tokens.csv")
			echo "users: [{name: '$user', user: {token: '$token'}}]"
		fi
	} >"$file.new"
	chmod 600 "$file.new"
	mv "$file.new" "$file"
}
kubeconfig "$KUBECONFIG_ADMIN" admin
for component in kube-controller-manager kube-scheduler kube-proxy; do
	kubeconfig "$STATE/$component.kubeconfig" "system:$component"
done
kubeconfig "$STATE/kube-router.kubeconfig" kube-router
kubeconfig "$STATE/kubelet.kubeconfig" "system:node:$NODE_NAME" "$PKI/kubelet.crt" "$PKI/kubelet.key"

# --- containerd --------------------------------------------------------------------------------------
cat >"$STATE/cni/net.d/10-tradebot.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tradebot",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
sed -e "s#@STATE@#$STATE#g" "$HERE/containerd.toml.in" >"$STATE/containerd/config.toml"
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for "containerd socket" 30 ctr --address "$CONTAINERD_SOCK" version

# --- images ---------------------------------------------------------------------------------------------
# Each archive is imported when containerd lacks it or it changed since its last import.
mkdir -p "$STATE/imported"
for archive in "$TOOLS"/build/images/archives/*.tar; do
	[[ -f $archive ]] || die "no image archives: run .ci/cluster/images.sh (make cluster does)"
	name=$(basename "$archive" .tar)
	stamp=$(cat "$TOOLS/build/images/stamps/$name")
	# The stamp alone is not enough: the kubelet's image garbage collection removes images no pod uses
	# (the tests' probe image between runs), so check that containerd still has the archive's image.
	ref=$(tar -xOf "$archive" manifest.json | jq -r '.[0].RepoTags[0]')
	if [[ -f $STATE/imported/$name && $(cat "$STATE/imported/$name") == "$stamp" ]] &&
		ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -Fxq "$ref"; then
		continue
	fi
	# Retried: replacing an image lets containerd's garbage collector remove the old image's snapshots while
	# the next import unpacks onto a layer they shared ("parent snapshot ... does not exist"); a second
	# import finds the layer gone and unpacks it afresh.
	for attempt in 1 2 3; do
		ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >"$LOGS/import-$name.log" 2>&1 && break
		((attempt < 3)) || die "ctr images import $archive failed 3 times (log: $LOGS/import-$name.log)"
		echo "cluster: importing $name failed ($(tail -c 200 "$LOGS/import-$name.log")), retrying"
		sleep 2
	done
	echo "$stamp" >"$STATE/imported/$name"
	echo "cluster: image $name imported"
done

# --- etcd and the control plane ------------------------------------------------------------------------
start etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
	--unsafe-no-fsync --log-level warn
wait_for "etcd health" 60 curl -sf http://127.0.0.1:2379/health

start kube-apiserver kube-apiserver --etcd-servers http://127.0.0.1:2379 \
	--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
	--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
	--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
	--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
	--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types InternalIP,Hostname \
	--service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
	--service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
	--enable-admission-plugins NodeRestriction --allow-privileged=true \
	--profiling=false --v=1
wait_for "kube-apiserver /readyz" 120 kc get --raw /readyz

start kube-controller-manager kube-controller-manager --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
	--authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
	--authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --controllers '*' --use-service-account-credentials \
	--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
	--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
	--allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
	--service-cluster-ip-range "$SERVICE_CIDR" --leader-elect=false --profiling=false --v=1
start kube-scheduler kube-scheduler --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
	--authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
	--authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1

# --- the node ---------------------------------------------------------------------------------------------
sed -e "s#@STATE@#$STATE#g" -e "s#@PKI@#$PKI#g" -e "s#@DNS_IP@#$DNS_IP#g" -e "s#@NODE_IP@#$NODE_IP#g" \
	-e "s#@CLUSTER_DOMAIN@#$CLUSTER_DOMAIN#g" -e "s#@CONTAINERD_SOCK@#$CONTAINERD_SOCK#g" \
	"$HERE/kubelet.yaml.in" >"$STATE/kubelet.yaml"
start kubelet kubelet --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
	--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$STATE/kubelet" --v=1
wait_for "node $NODE_NAME Ready" 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
# kube-proxy and kube-router look their node up at start, so they start once it is registered.
sed -e "s#@STATE@#$STATE#g" -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@NODE_IP@#$NODE_IP#g" \
	-e "s#@NODE_NAME@#$NODE_NAME#g" "$HERE/kube-proxy.yaml.in" >"$STATE/kube-proxy.yaml"
start kube-proxy kube-proxy --config "$STATE/kube-proxy.yaml" --v=1
# kube-router is the NetworkPolicy engine only: no routing (one node), no service proxy (kube-proxy's job).
start kube-router kube-router --kubeconfig "$STATE/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
	--run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
	--enable-cni=false --enable-ipv4=true --enable-ipv6=false \
	--service-cluster-ip-range "$SERVICE_CIDR" --health-port 20244 --metrics-port 0 --v=1
wait_for "kube-router's health" 60 curl -sf http://127.0.0.1:20244/healthz
step "node Ready"

# --- CoreDNS -------------------------------------------------------------------------------------------------
COREDNS_VERSION=$(sed -n 's/^COREDNS_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")
sed -e "s#@DNS_IP@#$DNS_IP#g" -e "s#@CLUSTER_DOMAIN@#$CLUSTER_DOMAIN#g" -e "s#@COREDNS_VERSION@#$COREDNS_VERSION#g" \
	"$HERE/coredns.yaml.in" | kc apply -f - >/dev/null
wait_for "the kube-system service account" 60 kc -n kube-system get serviceaccount default
kc -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null ||
	die "CoreDNS did not become ready: $(kc -n kube-system get pods -l k8s-app=kube-dns -o wide 2>&1)"
# UDP to the DNS ClusterIP is refused until kube-proxy has written its NAT rule.
wait_for "kube-proxy's rule for the DNS Service" 60 bash -c "iptables -t nat -S KUBE-SERVICES | grep -q $DNS_IP/32"
step "CoreDNS ready"

# --- monitoring: the Prometheus Operator and one Prometheus -----------------------------------------------
# Before the chart, so that it finds monitoring.coreos.com/v1 and renders its ServiceMonitor, PodMonitor
# and PrometheusRule.
PO_VERSION=$(sed -n 's/^PROMETHEUS_OPERATOR_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")
kc apply --server-side --force-conflicts -f "$TOOLS/build/prometheus-operator-crds/" >"$LOGS/monitoring-crds.log" 2>&1 ||
	die "the Prometheus Operator's CRDs did not apply (log: $LOGS/monitoring-crds.log)"
wait_for "the monitoring CRDs" 60 kc wait --for=condition=Established crd/prometheuses.monitoring.coreos.com \
	crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com \
	crd/prometheusrules.monitoring.coreos.com --timeout=1s
start prometheus-operator prometheus-operator --apiserver "https://$NODE_IP:6443" --ca-file "$PKI/ca.crt" \
	--cert-file "$PKI/prometheus-operator.crt" --key-file "$PKI/prometheus-operator.key" \
	--prometheus-config-reloader "localhost/tradebot/prometheus-config-reloader:$PO_VERSION" \
	--web.listen-address 127.0.0.1:10290 --log-level info
# The Prometheus of images.sh (cluster.sh's prometheus-k8s): the operator generates its config for this version.
prometheus_version=$(sed -n 's/^PROMETHEUS_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")
sed -e "s#@PROMETHEUS_VERSION@#$prometheus_version#g" "$HERE/monitoring.yaml.in" | kc apply -f - >/dev/null
step "Prometheus Operator running (Prometheus $prometheus_version)"

# --- the chart ---------------------------------------------------------------------------------------------------
if $INSTALL_CHART; then
	# Helm installs crds/ once and never updates them: a rerun after a CRD change (new validation rules)
	# would keep the old one, so the chart's CRDs are applied first, as an upgrade must.
	kc apply --server-side --force-conflicts -f "$ROOT/charts/tradebot/crds/" >"$LOGS/chart-crds.log" 2>&1 ||
		die "the chart's CRDs did not apply (log: $LOGS/chart-crds.log)"
	helm --kubeconfig "$KUBECONFIG_ADMIN" upgrade --install "$RELEASE" "$ROOT/charts/tradebot" \
		--namespace "$NAMESPACE" --create-namespace -f "$HERE/values-local.yaml" \
		--wait --timeout 10m >"$LOGS/helm.log" 2>&1 || {
		tail -n 20 "$LOGS/helm.log" >&2
		kc -n "$NAMESPACE" get pods -o wide >&2 || true
		die "helm install of the chart did not become ready (log: $LOGS/helm.log)"
	}
	step "chart installed as release $RELEASE in namespace $NAMESPACE, every pod Ready"
	api=$(kc -n "$NAMESPACE" get service -l app.kubernetes.io/component=api -o jsonpath='{.items[0].spec.clusterIP}:{.items[0].spec.ports[0].port}')
	dashboard=$(kc -n "$NAMESPACE" get service -l app.kubernetes.io/component=dashboard -o jsonpath='{.items[0].spec.clusterIP}:{.items[0].spec.ports[0].port}')
	cat <<EOF

The cluster runs (stop it, and undo every change to this machine, with: make cluster-down).
  export KUBECONFIG=$KUBECONFIG_ADMIN
  kubectl get pods -n $NAMESPACE
  kubectl apply -f manifests/examples/sma-basic.yaml && kubectl get ts
  dashboard: http://$dashboard/    API: http://$api/ (token: kubectl -n $NAMESPACE get secret -l app.kubernetes.io/instance=$RELEASE -o jsonpath='{.items[0].data.api-token}' | base64 -d)
EOF
else
	step "cluster ready (no chart)"
	echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
fi
