"""What a user sees: a rich progress bar and metric tables on a terminal, sparse plain lines
otherwise (logs, CI, `progress=False`). Only the main process constructs an enabled one.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dinokit.infer.tables import metrics_line, metrics_table


class TrainConsole:
    """Progress of one training run. `total_steps` None means a wall-clock budget of `budget_s`."""

    def __init__(self, enabled: bool, progress: bool, total_steps: int | None, budget_s: float) -> None:
        self.enabled = enabled
        self.console = Console()
        self.rich = enabled and progress and self.console.is_terminal
        self.plain = enabled and not self.rich
        self.total_steps = total_steps
        self.budget_s = budget_s
        self._progress: Progress | None = None
        self._task = None
        self._last_print = 0.0
        self._rate_mark: tuple[float, int] | None = None
        self._rate = 0.0

    def __enter__(self) -> "TrainConsole":
        if self.rich:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn() if self.total_steps else TextColumn(""),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console, transient=False,
            )
            total = self.total_steps if self.total_steps else self.budget_s
            self._task = self._progress.add_task("train", total=total, info="")
            self._progress.start()
        self._last_print = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def advance(self, step: int, elapsed: float) -> None:
        """Move the progress bar after every step: needs no loss, so nothing is read from the device."""
        if self._progress is not None:
            done = step if self.total_steps else min(elapsed, self.budget_s)
            self._progress.update(self._task, completed=done)

    def line_due(self, step: int) -> bool:
        """Whether plain output prints a line at optimiser step `step` (the trainer then reads the losses)."""
        if not self.plain:
            return False
        every = max(1, (self.total_steps or 0) // 10)
        return bool(self.total_steps and step % every == 0) or time.monotonic() - self._last_print >= 60 or step == 1

    def step(self, step: int, epoch: int, loss: float, lr: float, elapsed: float) -> None:
        """Report the losses of optimiser step `step` (1-based count of steps done), read on the host."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._rate_mark is None:
            self._rate_mark = (now, step)
        elif now - self._rate_mark[0] >= 2.0:
            self._rate = (step - self._rate_mark[1]) / (now - self._rate_mark[0])
            self._rate_mark = (now, step)
        info = f"epoch {epoch + 1} loss {loss:.3f} lr {lr:.1e} {self._rate:.2f} it/s"
        if self._progress is not None:
            done = step if self.total_steps else min(elapsed, self.budget_s)
            self._progress.update(self._task, completed=done, info=info)
            return
        if self.line_due(step):
            total = f"/{self.total_steps}" if self.total_steps else ""
            line = f"step {step}{total} {info} elapsed {elapsed / 60:.1f} min"
            self.console.print(line, highlight=False, soft_wrap=True)
            self._last_print = now

    def evaluation(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        title = f"eval: epoch {row['epoch']} step {row['step']}"
        if self.rich:
            self.console.print(metrics_table(row, title=title))
        else:
            self.console.print(f"{title}: {metrics_line(row)}", highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
