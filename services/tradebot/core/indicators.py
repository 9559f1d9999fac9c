"""Incremental moving averages. The fast kernel repeats exactly these float operations in the same
order, which is what makes its trades bit-identical to the reference strategy's."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class MovingAverage:
    kind: Literal["sma", "ema"]
    window: int
    count: int = 0
    total: float = 0.0
    ema: float = math.nan
    recent: deque[float] = field(default_factory=deque)

    def update(self, price: float) -> float:
        """Adds one price; returns the average, or NaN until `window` prices have been seen."""
        self.count += 1
        if self.kind == "sma":
            self.total += price
            self.recent.append(price)
            if self.count > self.window:
                self.total -= self.recent.popleft()
            return self.total / self.window if self.count >= self.window else math.nan
        if self.count < self.window:
            self.total += price
            return math.nan
        if self.count == self.window:
            self.total += price
            self.ema = self.total / self.window
        else:
            self.ema = self.ema + (2.0 / (self.window + 1.0)) * (price - self.ema)
        return self.ema

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window": self.window,
            "count": self.count,
            "total": self.total,
            "ema": self.ema,
            "recent": list(self.recent),
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> MovingAverage:
        return cls(
            kind=state["kind"],
            window=int(state["window"]),
            count=int(state["count"]),
            total=float(state["total"]),
            ema=float(state["ema"]),
            recent=deque(float(x) for x in state["recent"]),
        )
