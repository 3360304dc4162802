"""Errors a user can cause. The CLI turns each into one line on stderr and a non-zero exit."""

import os
import sys
from typing import Callable, NoReturn


class DinokitError(Exception):
    """Base class: the message is complete and names the offending input."""


class DataError(DinokitError):
    """A dataset, image or annotation file is missing or malformed."""


class CheckpointError(DinokitError):
    """A checkpoint is missing, corrupt, or does not fit the configuration."""


def one_line(message: object) -> str:
    """A message folded onto one line (the CLI contract: one `error: ...` line, no traceback)."""
    return " ".join(str(message).split()) or "failed"


def fail(message: object) -> NoReturn:
    """Print `error: <message>` on one stderr line and exit with code 2: every entry point's way out."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)


def run_worker(work: Callable[[], None]) -> None:
    """Run a spawned worker process's body (ablate/tune --jobs N): a `DinokitError` ends as one
    `[worker PID] error: ...` line and exit 2, Ctrl-C as exit 130; other errors keep their traceback."""
    try:
        work()
    except KeyboardInterrupt:
        sys.exit(130)
    except DinokitError as exc:
        print(f"[worker {os.getpid()}] error: {one_line(exc)}", flush=True)
        sys.exit(2)
