"""Seeding and random-number-generator state, in a form `torch.load(weights_only=True)` accepts.

Resuming "exactly where it stopped" needs every generator that shapes a run: torch (CPU and
CUDA), Python's `random` (used by some transforms) and NumPy. NumPy's state holds an ndarray,
which the safe loader refuses, so it is stored as a tensor plus plain numbers.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from dinokit.errors import DinokitError


NO_DETERMINISTIC_KERNEL = "does not have a deterministic implementation"  # torch's message


def seed_everything(seed: int, deterministic: bool = False, device: torch.device | None = None) -> None:
    """Seed torch, random and numpy; optionally ask torch for deterministic kernels.

    On an accelerator an op without a deterministic kernel then raises (the trainer turns it into
    one line, `nondeterminism_error`) rather than warning and running its nondeterministic one;
    on a CPU, where the ops of a step are deterministic, torch only warns."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device is None or device.type == "cpu")
        torch.backends.cudnn.benchmark = False


def nondeterminism_error(exc: BaseException, device: torch.device) -> DinokitError | None:
    """The one-line error for torch's "X does not have a deterministic implementation", else None."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or NO_DETERMINISTIC_KERNEL not in text:
        return None
    op = text.split(NO_DETERMINISTIC_KERNEL, 1)[0].strip() or "an operation"
    return DinokitError(
        f"--deterministic on {device.type}: torch {torch.__version__} has no deterministic kernel for {op} "
        "(train without --deterministic, or with --device cpu)"
    )


def capture_rng() -> dict[str, Any]:
    """Every generator's state as tensors, lists and numbers."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`; generators missing from `state` are left alone."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(device="cpu", dtype=torch.uint8))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.to(device="cpu", dtype=torch.uint8) for s in saved])
