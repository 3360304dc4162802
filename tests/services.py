"""What a test needs from outside the Python environment, and the one rule for its absence.

A test that needs a service skips with the reason where the service is absent, and fails instead
where `DINOKIT_REQUIRE_<NAME>=1` says that it must be there (`.ci/run` sets them):

  SLURM     Slurm's commands (sbatch, srun, squeue, scancel) on PATH; tests/slurm_cluster.py
            starts a one-node cluster from Debian's slurm-wlm and munge
  POSTGRES  a PostgreSQL server at DINOKIT_TEST_POSTGRES=postgresql://user:pass@host/db
  CUDA      a CUDA GPU that torch sees
  SHARED    the reference data folder next to the repository (../shared, or DINOKIT_SHARED)
  CHROMIUM  a headless Chromium (renders the ablation report's HTML)
  EXTRAS    the optional packages of `pip install -e '.[test]'` (onnx, av, submitit, ...)

Mark a test `@needs(NAME, why_missing)` (`why_missing` '' where it can run; conftest.py applies
the rule before the test starts), or call `unavailable(NAME, reason)` where only a fixture can
tell. `pytest -m service` selects every marked test (.ci/run's pass without the services).
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

SERVICES = ("SLURM", "POSTGRES", "CUDA", "SHARED", "CHROMIUM", "EXTRAS")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DINOKIT_SHARED") or ROOT.parent / "shared")
POSTGRES_URL = os.environ.get("DINOKIT_TEST_POSTGRES", "")
SLURM_COMMANDS = ("sbatch", "srun", "squeue", "scancel")


def required(name: str) -> bool:
    """True where DINOKIT_REQUIRE_<name>=1: the service must be there, its absence is a failure."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name}: one of {', '.join(SERVICES)}")
    return os.environ.get(f"DINOKIT_REQUIRE_{name}") == "1"


def unavailable(name: str, reason: str) -> NoReturn:
    """Skip the test with `reason`, or fail it where the service is required."""
    if required(name):
        pytest.fail(f"{reason} (DINOKIT_REQUIRE_{name}=1 says it must be here)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def needs(name: str, missing: str = "") -> pytest.MarkDecorator:
    """Mark a test (or a module, as `pytestmark`) that needs service `name`; `missing` says why it
    cannot run here ('' where it can, or where a fixture decides with `unavailable`)."""
    required(name)  # the name is checked when the test module is read
    return pytest.mark.service(name, missing)


def extra(module: str, install: str = "test") -> ModuleType:
    """Import an optional package of the `[test]` extra (or skip/fail, as a service)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        unavailable("EXTRAS", f"{module} is not installed: pip install -e '.[{install}]'")


def slurm_missing() -> str:
    """Why Slurm's client commands cannot run here ('' when they are on PATH)."""
    absent = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    return f"Slurm is not installed here ({', '.join(absent)} not on PATH)" if absent else ""


def cuda_missing() -> str:
    import torch

    return "" if torch.cuda.is_available() else "no CUDA GPU here"


def shared_missing(*paths: Path) -> str:
    """Why the reference files `paths` (under SHARED) cannot be read here ('' when all exist)."""
    absent = [p for p in paths if not p.exists()]
    return f"{absent[0]} is absent (the reference data next to the repository: ../shared or DINOKIT_SHARED)" \
        if absent else ""


def chromium() -> str | None:
    """The headless browser's command, or None."""
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)
