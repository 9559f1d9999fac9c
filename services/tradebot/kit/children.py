"""Child processes a service starts and stops itself: `tradebot up`'s services, the dashboard's Streamlit,
a local Prometheus."""

from __future__ import annotations

import ctypes
import signal
from typing import Any

__all__ = ["owned_child"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def owned_child() -> dict[str, Any]:
    """`subprocess.Popen` (or `asyncio.create_subprocess_exec`) keyword arguments for a child this process stops.

    In its own process group: a Ctrl-C at the terminal signals the whole foreground group, so the child used
    to get SIGINT from the terminal and then SIGTERM from us, and took that second signal as "exit at once",
    skipping its graceful shutdown. Now only we get the terminal's signal and stop the child once. Out of the
    terminal's reach, the child is sent SIGTERM by the kernel if we die first, so none is ever left behind.
    """
    return {"process_group": 0, "preexec_fn": _terminate_when_parent_dies}


def _terminate_when_parent_dies() -> None:
    # Runs in the child between fork and exec; Linux only (what the images and the tests run on).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
