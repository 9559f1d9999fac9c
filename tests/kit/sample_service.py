"""A service built on the kit, run as a subprocess by the shutdown tests (`python -m tests.kit.sample_service`).

Each unit of work starts, then waits for its gate file `unit-<n>` in `TRADEBOT_SAMPLE_GATE_DIR`: the test
decides when the in-flight unit may complete, so event order is asserted without timing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from pathlib import Path

from tradebot.kit.app import create_service_app
from tradebot.kit.lifecycle import ShutdownEvent, run_service
from tradebot.kit.settings import ServiceSettings, load_settings_or_exit

log = logging.getLogger("sample")


class SampleServiceSettings(ServiceSettings):
    service_name: str = "kit-sample"
    sample_gate_dir: Path


async def _gate_opens(gate: Path) -> None:
    # Polled on purpose: the test process opens the gate by creating the file.
    while True:
        if await asyncio.to_thread(gate.exists):
            return
        await asyncio.sleep(0.01)


def run() -> int:
    settings = load_settings_or_exit(SampleServiceSettings)
    gate_dir = settings.sample_gate_dir

    async def gate_dir_exists() -> bool:
        return gate_dir.is_dir()

    app = create_service_app(settings, readiness_checks={"gate_dir": gate_dir_exists})

    async def main(shutdown: ShutdownEvent) -> None:
        # What the service's process runs with, for the tests of `tune_collector`.
        log.info("collector", extra={"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()})
        unit = 0
        try:
            while not shutdown.is_set():
                unit += 1
                log.info("unit started", extra={"unit": unit})
                await _gate_opens(gate_dir / f"unit-{unit}")
                log.info("unit finished", extra={"unit": unit})
        except asyncio.CancelledError:
            log.warning("unit cancelled", extra={"unit": unit})
            raise
        log.info("main closing", extra={"units": unit})

    return run_service(main, settings, app=app)


if __name__ == "__main__":
    sys.exit(run())
