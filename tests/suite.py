"""The whole test suite in three pytest processes, split by file name: tests/test_[a-g]*,
test_[h-r]* and test_[s-z]*, one after the other, each with the arguments given here.

    python tests/suite.py            # the README's test command runs this, after pip install
    python tests/suite.py -x -k sigterm

Why not one `pytest -q`: on Python 3.11 the whole suite in one process ended in a segmentation
fault in plain Python code (a poll loop, a scheduler test) after ~900 tests, at the same test on
each run, and no group of files alone crashed. Some native extension the extras load (OpenVINO,
onnxruntime, PyAV, MLflow's pyarrow, ...) leaves the heap damaged across tests. Each third runs
with the same tests and the same fixtures; only the process is new.

The exit code is the first non-zero one of the thirds (a group that collects nothing, exit 5, counts
as passed unless every group does), after all three have run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GROUPS = ("abcdefg", "hijklmnopqr", "stuvwxyz")  # the first letter after `test_`
NO_TESTS = 5  # pytest's exit code when a selection collects nothing


def group_files(letters: str) -> list[str]:
    """The test files whose name after `test_` starts with one of `letters`, sorted."""
    return sorted(str(p) for p in TESTS.glob("test_*.py") if p.name[5:6].lower() in letters)


def main(args: list[str]) -> int:
    codes = []
    for letters in GROUPS:
        files = group_files(letters)
        if not files:
            continue
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *args, *files], cwd=TESTS.parent)
        if code < 0:
            print(f"tests/suite.py: the test_[{letters[0]}-{letters[-1]}]* process died of "
                  f"{signal.Signals(-code).name}", file=sys.stderr)
            code = 1
        codes.append(code)
    failed = [c for c in codes if c not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return NO_TESTS if codes and all(c == NO_TESTS for c in codes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
