"""Where the work of `ablate`, `tune` and `train` runs: this machine (`--launcher local`, the
default) or Slurm jobs (`--launcher slurm`, through submitit: dinokit/studies/slurm.py, which
takes a `Launch` and submits; this module imports nothing of it).

The flags are defined once here and shared by the three commands; `Launch` checks them before
anything is created or submitted. The jobs of a study share its Optuna storage, so that storage
must be a database server (PostgreSQL): SQLite is one file on one machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import typer

from dinokit.errors import DinokitError

LAUNCHERS = ("local", "slurm")
_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # sbatch --time's forms
_MEM_RE = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)

# --------------------------------------------------------------------------- the shared flags

LAUNCHER: Any = typer.Option("local", "--launcher", help="local (processes here) or slurm (Slurm jobs "
                             "through submitit; needs dinokit[cluster] and a --storage server).")
PARTITION: Any = typer.Option(None, "--partition", help="Slurm partition (default: the cluster's).")
TIME: Any = typer.Option(None, "--time", help="Slurm time limit per job: minutes or [D-]HH:MM[:SS].")
GPUS_PER_TRIAL: Any = typer.Option(0, "--gpus-per-trial", help="GPUs of each Slurm job (one trial at a time).")
CPUS_PER_TRIAL: Any = typer.Option(None, "--cpus-per-trial", help="CPUs of each Slurm job (and its "
                                   "training threads; default 1).")
MEM: Any = typer.Option(None, "--mem", help="Memory of each Slurm job, e.g. 16G.")
SLURM_ARGS: Any = typer.Option([], "--slurm-arg", help="Any sbatch option as KEY=VALUE, e.g. account=lab, "
                               "qos=high (repeatable).")
WAIT: Any = typer.Option(False, "--wait", help="With --launcher slurm: wait for the jobs, then report.")
NODES: Any = typer.Option(1, "--nodes", help="With --launcher slurm: nodes of the one DDP training.")
CPUS_PER_TASK: Any = typer.Option(None, "--cpus-per-task", help="With --launcher slurm: CPUs per process.")
GPUS_PER_NODE: Any = typer.Option(0, "--gpus-per-node", help="With --launcher slurm: GPUs per node, one "
                                  "process each (0: one CPU process per node).")


# the flags' parameter names and their defaults: a job runs its command with these (it is the Slurm job)
LOCAL_FLAGS: dict[str, Any] = {"launcher": "local", "partition": None, "time_": None, "gpus": 0, "cpus": None,
                               "mem": None, "slurm_args": [], "wait": False, "nodes": 1, "gpus_per_node": 0}


@dataclass
class Launch:
    """The launcher flags of one command, checked."""

    launcher: str = "local"
    partition: Optional[str] = None
    time: Optional[str] = None
    gpus: int = 0  # per job (a study's trial), or per node (train)
    cpus: Optional[int] = None  # per process
    mem: Optional[str] = None
    slurm_args: tuple[str, ...] = ()
    wait: bool = False
    nodes: int = 1

    def __post_init__(self) -> None:
        self.slurm_args = tuple(self.slurm_args)
        if self.launcher not in LAUNCHERS:
            raise DinokitError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got '{self.launcher}'")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise DinokitError(f"--time '{self.time}': give minutes or [D-]HH:MM[:SS], e.g. 90 or 1-12:00:00")
        if self.mem is not None and not _MEM_RE.match(self.mem):
            raise DinokitError(f"--mem '{self.mem}': give a size such as 16G or 4000M")
        for what, value, low in (("GPUs", self.gpus, 0), ("CPUs", self.cpus, 1), ("--nodes", self.nodes, 1)):
            if value is not None and value < low:
                raise DinokitError(f"{what} must be at least {low}, got {value}")
        self.sbatch_options()  # KEY=VALUE errors now, before anything starts
        if not self.on_slurm and (self.wait or self.nodes > 1 or self.gpus or self.slurm_args or
                                  any(v is not None for v in (self.partition, self.time, self.cpus, self.mem))):
            raise DinokitError("--partition, --time, --gpus-*, --cpus-*, --mem, --slurm-arg, --nodes and --wait "
                               "need --launcher slurm")

    @property
    def on_slurm(self) -> bool:
        return self.launcher == "slurm"

    @property
    def minutes(self) -> Optional[int]:
        """--time in whole minutes (sbatch's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)."""
        if self.time is None:
            return None
        days, _, clock = self.time.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if days or len(parts) == 3:  # [D-]H[:M[:S]]
            h, m, sec = (parts + [0, 0])[:3]
        else:  # M[:S]
            h, m, sec = 0, parts[0], (parts + [0])[1]
        seconds = ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec
        return max(1, -(-seconds // 60))

    @property
    def threads(self) -> int:
        """Training threads of a job's process: the CPUs Slurm gives it."""
        return self.cpus or 1

    def sbatch_options(self) -> dict[str, str]:
        """--slurm-arg KEY=VALUE as sbatch options (`--KEY=VALUE`), keyed as submitit spells them."""
        options = {}
        for item in self.slurm_args:
            key, sep, value = item.partition("=")
            key = key.strip().lstrip("-")
            if not sep or not key:
                raise DinokitError(f"--slurm-arg '{item}': expected KEY=VALUE, e.g. account=lab")
            options[key.replace("-", "_")] = value  # submitit's spelling: it overrides its own defaults
        return options

    def check_storage(self, storage: str) -> "Launch":
        """Slurm jobs share the study through a server; refuse SQLite before creating anything."""
        if self.on_slurm and storage.startswith("sqlite"):
            raise DinokitError("--launcher slurm needs a database server that every job reaches, e.g. "
                               "--storage postgresql://user:pass@host/db (SQLite is one file on one machine)")
        return self
