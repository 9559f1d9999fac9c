"""Least-privilege Kafka ACLs, one user per component (issue 14.7).

What each component may do follows from what its code does:

- every component makes the pipeline's topics at start (`ensure_topics`): CREATE and DESCRIBE on them, which
  lets it neither read nor write them;
- feed: writes `ticks` and `ticks.dlq`;
- strategy `<id>`: reads `ticks`, `fills` and `strategy-commands` (force-exits) in its transactional loop
  (group and transactional id `strategy-<id>`), writes `orders`, `signals`, `bars` and its own
  `strategy-state.<id>` (which it also reads back and makes), reads `bars` back (warm-up);
- executor: reads `orders` and `strategy-control` in its loop (group and transactional id `executor`), writes
  `fills` and `positions`, reads both back (rebuild, Redis projection under groups `executor-projection-*`),
  reads `signals` and `bars` (groups `executor-signals`, `executor-bars`);
- api: writes `strategy-control` (halt and resume) and `strategy-commands` (force-exit, close-all);
- notifier: reads `fills`, `strategy-control` and `strategy-commands` (group `notifier`), writes nothing;
- a full read of a topic (`read_all`/`scan`: the rebuilds) assigns partitions under a group named
  `tradebot-read-all-<uuid>`: READ on that group prefix.

So a strategy cannot forge fills, write another strategy's state, or halt anyone; the executor cannot write
orders. `tradebot kafka-acls` prints these as `kafka-acls` commands or applies them with the admin client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tradebot.adapters.bus import BusError
from tradebot.adapters.topics import (
    BARS,
    COMMANDS,
    CONTROL,
    FILLS,
    ORDERS,
    POSITIONS,
    SIGNALS,
    TICKS,
    TICKS_DLQ,
    pipeline_topics,
    strategy_state_topic,
)

__all__ = ["COMPONENTS", "Acl", "apply_acls", "build_parser", "component_acls", "kafka_acls_commands", "run"]

Component = Literal["feed", "strategy", "executor", "api", "notifier"]
COMPONENTS: tuple[Component, ...] = ("feed", "strategy", "executor", "api", "notifier")
# The notifier's consumer group (TRADEBOT_NOTIFIER_GROUP's default).
NOTIFIER_GROUP = "notifier"
ResourceType = Literal["topic", "group", "transactional-id"]
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]
# The group a full read of a topic runs under (see KafkaBus.scan): its name ends in a random id.
READ_ALL_GROUP_PREFIX = "tradebot-read-all-"


@dataclass(frozen=True, order=True)
class Acl:
    """Allow `principal` (`User:<name>`) to do `operation` on a resource, named exactly or by prefix."""

    principal: str
    resource: ResourceType
    name: str
    operation: Operation
    prefixed: bool = False


def component_acls(component: Component, user: str, *, strategy_id: str | None = None) -> list[Acl]:
    """The ACLs `user` needs to run `component` (a strategy: the one with `strategy_id`), and nothing more."""
    principal = f"User:{user}"

    def topic(name: str, *operations: Operation) -> list[Acl]:
        return [Acl(principal, "topic", name, operation) for operation in operations]

    def group(name: str, prefixed: bool = False) -> Acl:
        return Acl(principal, "group", name, "READ", prefixed)

    def transactional_id(name: str) -> list[Acl]:
        return [
            Acl(principal, "transactional-id", name, "WRITE"),
            Acl(principal, "transactional-id", name, "DESCRIBE"),
        ]

    acls = [acl for spec in pipeline_topics() for acl in topic(spec.name, "CREATE", "DESCRIBE")]
    acls.append(group(READ_ALL_GROUP_PREFIX, prefixed=True))
    if component == "feed":
        acls += topic(TICKS, "WRITE") + topic(TICKS_DLQ, "WRITE")
    elif component == "strategy":
        if not strategy_id:
            raise ValueError("a strategy's ACLs need its strategy id")
        loop = f"strategy-{strategy_id}"
        state = strategy_state_topic(strategy_id)
        acls += topic(TICKS, "READ") + topic(FILLS, "READ") + topic(COMMANDS, "READ")
        acls += topic(ORDERS, "WRITE") + topic(SIGNALS, "WRITE") + topic(BARS, "READ", "WRITE")
        acls += topic(state, "CREATE", "DESCRIBE", "READ", "WRITE")
        acls += [group(loop), *transactional_id(loop)]
    elif component == "executor":
        acls += topic(ORDERS, "READ") + topic(CONTROL, "READ") + topic(SIGNALS, "READ") + topic(BARS, "READ")
        acls += topic(FILLS, "READ", "WRITE") + topic(POSITIONS, "READ", "WRITE")
        acls += [group("executor"), group("executor-signals"), group("executor-bars")]
        acls.append(group("executor-projection-", prefixed=True))
        acls += transactional_id("executor")
    elif component == "api":
        acls += topic(CONTROL, "WRITE") + topic(COMMANDS, "WRITE")
    elif component == "notifier":
        acls += topic(FILLS, "READ") + topic(CONTROL, "READ") + topic(COMMANDS, "READ")
        acls.append(group(NOTIFIER_GROUP))
    else:  # pragma: no cover - Literal
        raise ValueError(f"unknown component {component!r}")
    return sorted(set(acls))


_CLI_RESOURCE = {"topic": "--topic", "group": "--group", "transactional-id": "--transactional-id"}


def kafka_acls_commands(acls: Iterable[Acl], bootstrap: str = "$BOOTSTRAP") -> list[str]:
    """One `kafka-acls --add` command per ACL (Kafka's own CLI; add `--command-config` for a secured admin)."""
    return [
        f"kafka-acls --bootstrap-server {bootstrap} --add --allow-principal {acl.principal}"
        f" --operation {acl.operation.title()} {_CLI_RESOURCE[acl.resource]} {acl.name}"
        + (" --resource-pattern-type prefixed" if acl.prefixed else "")
        for acl in acls
    ]


def apply_acls(client_config: dict[str, str], acls: Sequence[Acl], timeout: float = 30.0) -> None:
    """Creates `acls` on the cluster with the admin client (`client_config`: librdkafka settings of a user
    allowed to alter ACLs); creating one that exists is a no-op. Raises BusError naming a refused one."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

    resource_types = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional-id": ResourceType.TRANSACTIONAL_ID,
    }
    bindings = [
        AclBinding(
            resource_types[acl.resource],
            acl.name,
            ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
            acl.principal,
            "*",
            AclOperation[acl.operation],
            AclPermissionType.ALLOW,
        )
        for acl in acls
    ]
    if not bindings:
        return
    admin = AdminClient(dict(client_config))
    for binding, future in admin.create_acls(bindings, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise BusError(f"creating the ACL {binding}: {exc}") from exc


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Prints (or with --apply creates) the Kafka ACLs one component's user needs and nothing more. "
        "--apply connects as the TRADEBOT_KAFKA_* settings say (bootstrap, SASL user allowed to alter ACLs, CA)."
    )
    parser.add_argument("component", choices=COMPONENTS)
    parser.add_argument("--user", required=True, help="the component's Kafka user (principal User:<user>)")
    parser.add_argument("--strategy-id", help="the strategy's id (component strategy)")
    parser.add_argument("--apply", action="store_true", help="create the ACLs instead of printing commands")


def run(args: argparse.Namespace) -> int:
    from tradebot.adapters.connect import PipelineSettings
    from tradebot.kit.settings import load_settings_or_exit

    try:
        acls = component_acls(args.component, args.user, strategy_id=args.strategy_id)
    except ValueError as exc:
        print(f"tradebot kafka-acls: {exc}", file=sys.stderr)
        return 2
    settings = load_settings_or_exit(PipelineSettings)
    if not args.apply:
        print("\n".join(kafka_acls_commands(acls, settings.kafka_bootstrap)))
        return 0
    config = {"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_client_config()}
    try:
        apply_acls(config, acls)
    except BusError as exc:
        print(f"tradebot kafka-acls: {exc}", file=sys.stderr)
        return 1
    print(f"{len(acls)} ACLs for User:{args.user} ({args.component}) in place")
    return 0
