"""A one-node Slurm cluster on this machine for the launcher tests: munged, slurmctld and slurmd
from the distribution's packages (Debian: `apt-get install slurm-wlm munge`), with a slurm.conf
written here.

The daemons need root (slurmd starts jobs as the submitting user); as another user the commands
go through `sudo -n`. `start(folder)` returns the slurm.conf to export as SLURM_CONF for the
client commands (sbatch, squeue, scancel), `stop(cluster)` ends the daemons it started.
Standard library only, so that CI can also run it as a script:
`python tests/slurm_cluster.py start DIR` (prints the SLURM_CONF path) / `stop DIR`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel")


@dataclass
class Cluster:
    folder: Path
    conf: Path
    node: str
    started: list[int] = field(default_factory=list)  # pids of the daemons this helper started

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def missing() -> str:
    """Why no cluster can be started here ('' when it can)."""
    absent = [d for d in DAEMONS if shutil.which(d, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    absent += [c for c in CLIENTS if shutil.which(c) is None]  # the jobs are submitted from this PATH
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return "the Slurm daemons need root (or password-less sudo) to start"
    return ""


def _root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(1, int(line.split()[1]) // 1024 - 512)
    return 1024


def write_conf(folder: Path, node: str) -> Path:
    """A one-node slurm.conf: this machine's name, CPUs and memory; jobs may share CPUs."""
    cpus = os.cpu_count() or 1
    lines = [
        "ClusterName=dinokit-test", f"SlurmctldHost={node}", "SlurmUser=root", "AuthType=auth/munge",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2", "KillWait=5", "MinJobAge=600", "SlurmdParameters=config_overrides",
        f"NodeName={node} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _munge_ok() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                                       timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge(started: list[int]) -> None:
    """munged runs as the munge user and needs its socket and log folders owned by it."""
    if _munge_ok():
        return
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        subprocess.run(_root(["mkdir", "-p", d]), check=True)
        subprocess.run(_root(["chown", "munge:munge", d]), check=True)
    subprocess.run(_root(["runuser", "-u", "munge", "--", "/usr/sbin/munged"]), check=True)
    pid = Path("/run/munge/munged.pid")
    if pid.is_file():
        started.append(int(pid.read_text().split()[0]))
    _until(_munge_ok, 20, "munged did not start")


def _until(ok: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ok():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise RuntimeError(what)


def node_state(cluster: Cluster) -> str:
    r = subprocess.run(["sinfo", "-h", "-n", cluster.node, "-o", "%t"], capture_output=True, text=True,
                       env=cluster.env(), timeout=20)
    return r.stdout.strip() if r.returncode == 0 else ""


def start(folder: Path) -> Cluster:
    """Write the conf and start munged (if not running), slurmctld and slurmd; wait for an idle node."""
    folder = Path(folder).resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cluster = Cluster(folder, write_conf(folder, node), node)
    _start_munge(cluster.started)
    for daemon, pid_file in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
        cmd = [f"/usr/sbin/{daemon}", "-f", str(cluster.conf)] + (["-c"] if daemon == "slurmctld" else [])
        subprocess.run(_root(cmd), check=True, env=cluster.env())
        _until(lambda: (folder / pid_file).is_file(), 30, f"{daemon} did not start (see {folder}/{daemon}.log)")
        cluster.started.append(int((folder / pid_file).read_text().split()[0]))
    try:
        _until(lambda: node_state(cluster) in ("idle", "mix", "alloc"), 60, "the Slurm node did not come up")
    except RuntimeError:
        stop(cluster)
        raise
    return cluster


def stop(cluster: Cluster) -> None:
    """End the daemons this helper started (by pid), newest first."""
    for pid in reversed(cluster.started):
        subprocess.run(_root(["kill", "-TERM", str(pid)]), capture_output=True)
    cluster.started.clear()


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1]).resolve()
    if argv[0] == "start":
        cluster = start(folder)
        (folder / "started.pids").write_text(" ".join(map(str, cluster.started)))
        print(cluster.conf)
        return 0
    pids = (folder / "started.pids").read_text().split() if (folder / "started.pids").is_file() else []
    stop(Cluster(folder, folder / "slurm.conf", "", [int(p) for p in pids]))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(_main(sys.argv[1:]))
