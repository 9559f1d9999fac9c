"""The operator's in-memory state, kept where kopf keeps it: its `memo`.

`tradebot operator` hands kopf one `OperatorMemo`; kopf gives every resource object its own shallow copy
(`copy.copy`), so all share the settings, the API client and the wake-ups, and each TradingStrategy gets
its own lock. Nothing here outlives the process: what must survive a restart is in the resources.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from tradebot.operator.kube import Kube
from tradebot.operator.settings import OperatorSettings

StrategyKey = tuple[str, str]  # (namespace, name) of a TradingStrategy


class Wakeups:
    """One event per TradingStrategy whose daemon is running: its owned objects' watch events set it."""

    def __init__(self) -> None:
        self._events: dict[StrategyKey, asyncio.Event] = {}

    def register(self, key: StrategyKey) -> asyncio.Event:
        event = self._events[key] = asyncio.Event()
        return event

    def unregister(self, key: StrategyKey, event: asyncio.Event) -> None:
        if self._events.get(key) is event:
            del self._events[key]

    def notify(self, key: StrategyKey) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()


@dataclass
class OperatorMemo:
    settings: OperatorSettings
    kube: Kube | None = None  # made by the startup handler, inside kopf's event loop
    wakeups: Wakeups = field(default_factory=Wakeups)
    # Per resource (see __copy__): the reconcile handler and the daemon never apply a strategy's objects
    # at the same time, so an older rendering cannot land after a newer one.
    apply_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __copy__(self) -> OperatorMemo:
        return dataclasses.replace(self, apply_lock=asyncio.Lock())

    @property
    def client(self) -> Kube:
        if self.kube is None:
            raise RuntimeError("the API client is made by the startup handler; kopf runs it first")
        return self.kube
