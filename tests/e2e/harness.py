"""Runs the live services as separate processes against real Kafka and Redis, and reads back what
they committed, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.plugins._proc import free_port, port_open
from tests.plugins.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "historical_data.csv"
PARAMS = {"short_window": 10, "long_window": 30, "stop_loss_pct": 2.0}
BACKTEST_FLAGS = ["--short-window", "10", "--long-window", "30", "--stop-loss-pct", "2"]


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    http_port: int = 0

    def start(self) -> None:
        self.http_port = free_port()
        env = {**self.env, "TRADEBOT_HTTP_PORT": str(self.http_port), "TRADEBOT_HTTP_HOST": "127.0.0.1"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tradebot.cli", *self.argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Kafka(Protocol):
    """What the pipeline needs of Kafka: where it is (one broker, or a cluster's every broker)."""

    @property
    def bootstrap(self) -> str: ...


K = TypeVar("K", bound=Kafka)


@dataclass
class Pipeline(Generic[K]):
    kafka: K
    redis: RedisServer
    workdir: Path
    services: dict[str, Service] = field(default_factory=dict)
    simulator_port: int = 0
    api_port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TRADEBOT_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "TRADEBOT_REDIS_URL": self.redis.url,
            "TRADEBOT_LOG_JSON": "true",
            "TRADEBOT_SHUTDOWN_GRACE_SECONDS": "10",
            **extra,
        }

    def add(self, name: str, argv: list[str], **env: str) -> Service:
        service = Service(
            name,
            argv,
            self.env(TRADEBOT_SERVICE_NAME=name.split("-")[0], **env),
            self.workdir / f"{name}.log",
        )
        self.services[name] = service
        return service

    def start_replay(
        self,
        *,
        speed: str = "max",
        strategy_id: str = "parity",
        params: dict[str, Any] | None = None,
        data: Path = SAMPLE,
        with_api: bool = False,
        **executor_env: str,
    ) -> None:
        self.simulator_port = free_port()
        self.add(
            "simulator",
            [
                "simulator",
                "--replay",
                str(data),
                "--speed",
                speed,
                "--symbol",
                "GOOG",
                "--port",
                str(self.simulator_port),
            ],
        )
        self.add("executor", ["executor"], **executor_env)
        self.add(
            f"strategy-{strategy_id}",
            ["strategy"],
            TRADEBOT_STRATEGY_ID=strategy_id,
            TRADEBOT_STRATEGY_SYMBOLS="GOOG",
            TRADEBOT_STRATEGY_PARAMS=json.dumps(params or PARAMS),
        )
        self.add(
            "feed",
            ["feed"],
            TRADEBOT_FEED_URL=f"ws://127.0.0.1:{self.simulator_port}",
            TRADEBOT_SYMBOLS="GOOG",
        )
        if with_api:
            self.add("api", ["api"], TRADEBOT_API_TOKEN="secret-token").start()
        for name in ("executor", f"strategy-{strategy_id}", "simulator"):
            self.services[name].start()
        # Ticks flow only once every strategy consumes (rebuilt and warmed up: its readiness check of that name
        # passes; a bar strategy's history check fails until bars come): a strategy still starting when another
        # has published bars would warm up from them and skip the ticks they were made of, trading differently
        # from the backtest of the whole file.
        for name, service in self.services.items():
            if service.running and name.startswith("strategy-"):
                self.wait_until(f"{name} consuming", partial(_check_passes, service.http_port, name))
        self.services["feed"].start()
        if with_api:
            # The api listens on its own port (its TRADEBOT_HTTP_PORT); remember it for requests.
            self.api_port = self.services["api"].http_port

    def stop_all(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name}\n{s.log.read_text(errors='replace')[-3000:]}"
            for s in self.services.values()
            if s.log.exists()
        )

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for service in self.services.values():
                if service.process is not None and service.process.poll() not in (None, 0, -9):
                    raise AssertionError(
                        f"{service.name} exited with {service.process.returncode}\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.3)

    def wait_http(self, service: str, path: str = "/readyz", timeout: float = 60.0) -> None:
        port = self.services[service].http_port
        self.wait_until(f"{service} {path}", lambda: port_open(port) and _status(port, path) == 200, timeout)


def _check_passes(port: int, check: str) -> bool:
    """Whether the service's `/readyz` reports its check `check` passing (whatever the others say)."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return False
    try:
        return json.loads(body).get("checks", {}).get(check) is True
    except ValueError:
        return False


def _status(port: int, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def read_topic(
    bootstrap: str, topic: str, *, committed: bool = True, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every record of `topic` (values parsed), partition by partition, as a transactional reader sees them."""
    return [value for _, value in read_keyed(bootstrap, topic, committed=committed, timeout=timeout)]


def read_keyed(
    bootstrap: str, topic: str, *, committed: bool = True, timeout: float = 30.0
) -> list[tuple[str, dict[str, Any]]]:
    """`read_topic` with each record's key (decoded; empty when it has none)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-reader-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = set(partitions)
        values: dict[int, list[tuple[str, dict[str, Any]]]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise AssertionError(str(error))
            partition, value = message.partition(), message.value()
            assert partition is not None
            assert value is not None
            key = message.key()
            values[partition].append(((key or b"").decode(), json.loads(value)))
        return [value for p in partitions for value in values[p]]
    finally:
        consumer.close()


def trades_from_fills(fills: list[dict[str, Any]]) -> list[tuple[str, str, str, float, float, float]]:
    """Round trips from filled records in order: (entry time, exit time, side, qty, entry, exit)."""
    trades = []
    open_: dict[str, Any] | None = None
    for record in fills:
        fill, order = record["fill"], record["order"]
        if fill["status"] != "filled":
            continue
        if open_ is None:
            open_ = {
                "ts": order["ts"],
                "side": "long" if fill["side"] == "buy" else "short",
                "qty": fill["qty"],
                "price": fill["price"],
            }
        else:
            trades.append(
                (
                    open_["ts"][:10],
                    order["ts"][:10],
                    open_["side"],
                    open_["qty"],
                    open_["price"],
                    fill["price"],
                )
            )
            open_ = None
    return trades


def backtest_trades(
    extra: list[str] | None = None, data: Path = SAMPLE, base: list[str] | None = None
) -> tuple[list[tuple[str, str, str, float, float, float]], dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tradebot.cli",
            "backtest",
            "--data",
            str(data),
            *(base or BACKTEST_FLAGS),
            # Like with like: the replay sends each row's close as one tick to a tick strategy, which is
            # the tick timeframe (the CLI's default, auto, would trade daily OHLC rows as 1d bars).
            # A bar-parity `extra` names its own timeframe after this one, and the last one counts.
            "--timeframe",
            "tick",
            "--fill",
            "close",
            "--json",
            *(extra or []),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    trades = [
        (t["entry_time"][:10], t["exit_time"][:10], t["side"], t["qty"], t["entry_price"], t["exit_price"])
        for t in result["trades"]
        if t["exit_reason"] != "end_of_data"
    ]
    return trades, result
