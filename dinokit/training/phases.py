"""Late phases of a run: switches that turn on once a fraction of the training budget is spent.

The budget's progress is the lr schedule's (training/optim.py: the fraction of the steps, epochs
or minutes spent, whichever is further along), so "the last 14% of the budget" means the same
for `--steps`, `--epochs` and `--time-budget` runs. A phase, once started, stays on (progress
under a time budget can jitter), and its start is saved in last.pt, so a resumed run is in the
same phase as the run it continues. What starting a phase does is the trainer's
(`Trainer._start_phase`); this module only says when.

- `iou_cost` (`model.iou_cost_from`; DEIMv2's `change_matcher`, from epoch 45 of 58 = 0.78): the
  Hungarian matching cost becomes IoU-heavy, -(class probability x IoU^model.iou_cost_power).
- `no_aug` (`train.no_aug_from`; DEIM and D-FINE: the last epochs, DEIMv2 50 of 58 = 0.86):
  strong augmentation off (mosaic, Copy-Blend, crop, colour jitter, multi-scale: flip and the
  largest size remain) and the weight EMA restarted from the current weights (started, when the
  run kept none), which evaluation uses from then on.
"""

from __future__ import annotations

from typing import Any

PHASES = ("iou_cost", "no_aug")  # in the order they are started when both are due at one step


class LatePhases:
    """`starts[phase]`: the budget fraction from which the phase is on (0: never)."""

    def __init__(self, starts: dict[str, float]) -> None:
        unknown = set(starts) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phase(s): {', '.join(sorted(unknown))}")
        self.starts = {p: float(starts.get(p, 0.0)) for p in PHASES}
        self.started: list[str] = []

    def due(self, progress: float) -> list[str]:
        """The phases that start at this progress (each once, in PHASES order); marks them started."""
        new = [p for p in PHASES if p not in self.started and 0.0 < self.starts[p] <= progress]
        self.started += new
        return new

    def on(self, phase: str) -> bool:
        return phase in self.started

    def state_dict(self) -> dict[str, Any]:
        return {"started": list(self.started)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.started = [p for p in PHASES if p in state.get("started", [])]
