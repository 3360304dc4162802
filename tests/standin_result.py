"""What a stand-in trainer returns in the ablation tests: the fields of `TrainResult` that the
studio reads, without training a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StandInResult:
    run_dir: Path
    best: dict[str, float]
    history: list[dict[str, Any]]
    params: int = 1000
    interrupted: bool = False
    steps: int = 2
    rank: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
