"""Stopping a training run cleanly: SIGTERM (a scheduler's preemption) or Ctrl-C ask the loop to
stop at the next step boundary, where the state is consistent and `last.pt` can be written."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequest:
    """SIGTERM or a first Ctrl-C sets a flag that the loop checks each step (the state stays
    consistent); a second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StopRun(Exception):
    """Raised by an `on_epoch` callback to end a run where it stands because its owner decided so
    (a pruned `tune` trial). Not a crash: the trainer re-raises it unchanged, keeps no resume
    state (`last.pt` is removed) and prints no resume hint."""
