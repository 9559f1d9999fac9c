"""Kafka with a SASL_SSL listener and Redis with TLS and ACL users, as managed services run them.

Certificates are made per run with openssl (a throwaway CA and a server certificate for 127.0.0.1 and
localhost). The Kafka node is KRaft (broker and controller in one JVM) with:

- a SASL_SSL listener for the clients, offering SCRAM-SHA-512 (users added at format time with
  `kafka-storage format --add-scram`) and PLAIN (users in the listener's JAAS config);
- a PLAINTEXT listener for the broker's own traffic and the controller, bound to 127.0.0.1 (whose
  principal, `User:ANONYMOUS`, is a super user so the node can run);
- the StandardAuthorizer, with `User:admin` a super user: every other user can do only what ACLs allow.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins._proc import ServerProcess, free_port, port_open, require_tool
from tests.plugins.servers import SINGLE_NODE_SETTINGS

HEAP_OPTS = "-Xms64m -Xmx256m -XX:TieredStopAtLevel=1"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret-pw"
# PLAIN users (name -> password); `plain-admin` is a super user too, so PLAIN can be tested without ACLs.
PLAIN_USERS = {"plain-admin": "plain-admin-pw"}
# SCRAM-SHA-512 users besides the admin: one per pipeline component, for the ACL tests.
COMPONENT_USERS = {
    "feed": "feed-pw",
    "strategy-a": "strategy-a-pw",
    "strategy-b": "strategy-b-pw",
    "executor": "executor-pw",
    "api": "api-pw",
    "notifier": "notifier-pw",
}


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # the CA certificate clients trust (PEM)
    server_cert: Path
    server_key: Path  # PKCS#8, unencrypted
    keystore: Path  # key and certificate in one PEM file: Kafka's `ssl.keystore.type=PEM`


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA and a server certificate signed by it for 127.0.0.1 and localhost."""
    openssl = str(require_tool("openssl"))
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca: list[str | Path] = ["-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial", "-extfile", extensions]
    steps: list[list[str | Path]] = [
        [
            "req",
            "-x509",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca_file,
            "-days",
            "2",
            "-subj",
            "/CN=tradebot-test-ca",
        ],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, *ca, "-out", cert, "-days", "2"],
    ]
    for step in steps:
        subprocess.run([openssl, *map(str, step)], check=True, capture_output=True, timeout=60)
    keystore = directory / "keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return Certificates(ca_file, cert, key, keystore)


@dataclass
class SecureKafka:
    bootstrap: str  # the SASL_SSL listener
    internal_bootstrap: str  # the PLAINTEXT listener (the node's own; not for clients under test)
    ca_file: Path
    process: ServerProcess

    def client_config(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """librdkafka settings for a client of the SASL_SSL listener."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca_file),
        }


def _jaas_plain(users: dict[str, str]) -> str:
    entries = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};"


def _properties(root: Path, certs: Certificates, port: int, internal_port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={_jaas_plain(PLAIN_USERS)}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={certs.keystore}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:ANONYMOUS;User:admin;User:plain-admin",
            f"log.dirs={root / 'logs'}",
            *SINGLE_NODE_SETTINGS,
            "",
        ]
    )


def start_secure_kafka(root: Path, certs: Certificates) -> SecureKafka:
    """Formats a KRaft node with the SCRAM users and starts it; the caller must `process.stop()` it."""
    kafka_class = str(require_tool("kafka-class"))
    require_tool("java")
    port, internal_port, controller_port = free_port(), free_port(), free_port()
    config = root / "server.properties"
    config.write_text(_properties(root, certs, port, internal_port, controller_port))
    env = {**os.environ, "KAFKA_HEAP_OPTS": HEAP_OPTS}
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    scram = [
        f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
        for name, password in {ADMIN_USER: ADMIN_PASSWORD, **COMPONENT_USERS}.items()
    ]
    fmt = ServerProcess(
        "kafka-format",
        [
            kafka_class,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
            *scram,
        ],
        root,
        env=env,
    )
    if fmt.popen.wait(timeout=120) != 0:
        raise RuntimeError(f"kafka storage format failed:\n{fmt.log_tail()}")
    process = ServerProcess("kafka-secure", [kafka_class, "kafka.Kafka", str(config)], root, env=env)
    broker = SecureKafka(f"127.0.0.1:{port}", f"127.0.0.1:{internal_port}", certs.ca_file, process)
    try:
        process.wait_until("its port", lambda: port_open(port), 120)
        process.wait_until("an authenticated metadata answer", lambda: _admin_sees_brokers(broker), 120)
    except BaseException:
        process.stop()
        raise
    return broker


def _admin_sees_brokers(broker: SecureKafka) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**broker.client_config(ADMIN_USER, ADMIN_PASSWORD), "socket.timeout.ms": 2000})
    try:
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:
        return False


@dataclass
class TlsRedis:
    port: int
    ca_file: Path
    process: ServerProcess

    def url(self, user: str, password: str) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0"


# The ACL user the store connects as: every command on every key, as the services need.
REDIS_USER = "tradebot"
REDIS_PASSWORD = "redis-user-pw"


def start_tls_redis(root: Path, certs: Certificates) -> TlsRedis:
    """redis-server on a TLS port only (no plain port), the default user off and `REDIS_USER` on."""
    binary = str(require_tool("redis-server"))
    port = free_port()
    # An ACL file: redis-server's `--user` flag takes the rules as one argument it then refuses.
    acl_file = root / "users.acl"
    acl_file.write_text(f"user default off\nuser {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n")
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca_file),
        "--tls-auth-clients", "no",
        "--dir", str(root),
        "--save", "",
        "--appendonly", "no",
        "--aclfile", str(acl_file),
    ]  # fmt: skip
    server = TlsRedis(port, certs.ca_file, ServerProcess("redis-tls", argv, root))
    try:
        server.process.wait_until("its TLS port", lambda: port_open(port), 30)
    except BaseException:
        server.process.stop()
        raise
    return server


@pytest.fixture(scope="session")
def test_certificates() -> Iterator[Certificates]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-certs-"))
    try:
        yield make_certificates(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def secure_kafka(test_certificates: Certificates) -> Iterator[SecureKafka]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-kafka-sasl-"))
    try:
        broker = start_secure_kafka(root, test_certificates)
        try:
            yield broker
        finally:
            broker.process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_redis(test_certificates: Certificates) -> Iterator[TlsRedis]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-redis-tls-"))
    try:
        server = start_tls_redis(root, test_certificates)
        try:
            yield server
        finally:
            server.process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
