"""The rule of tests/services.py holds: a test that needs an absent service skips with its reason,
and fails (pytest's exit code non-zero) where DINOKIT_REQUIRE_<NAME>=1; and no test of the suite
skips by any other path (a plain `pytest.skip`, `importorskip` or `skipif`), the platform ones
named below excepted."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import services

ROOT = Path(__file__).resolve().parents[1]
# the skips that are about the platform, not a service: (file, words of the reason)
PLATFORM = {("test_infer_speed.py", "glibc-only"), ("test_studies_pool.py", "(Linux)")}
PROBE = '''
import pytest

from tests.services import needs, unavailable


@needs("SLURM", "no Slurm in this probe")
def test_marked():
    raise AssertionError("a test whose service is absent must not run")


def test_fixture_decides():
    unavailable("POSTGRES", "no server in this probe")
'''


def _probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_setup  # noqa: F401\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DINOKIT_REQUIRE_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"],
                          cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True)


def test_an_absent_service_skips_with_its_reason(tmp_path: Path) -> None:
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout and "no Slurm in this probe" in result.stdout
    assert "no server in this probe" in result.stdout


def test_a_required_service_that_is_absent_fails(tmp_path: Path) -> None:
    result = _probe(tmp_path, DINOKIT_REQUIRE_SLURM="1", DINOKIT_REQUIRE_POSTGRES="1")
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "1 error" in result.stdout  # the fixture's test, the marked one
    assert "DINOKIT_REQUIRE_SLURM=1 says it must be here" in result.stdout
    assert "DINOKIT_REQUIRE_POSTGRES=1 says it must be here" in result.stdout
    assert "must not run" not in result.stdout
    only_slurm = _probe(tmp_path, DINOKIT_REQUIRE_SLURM="1")  # each service by its own variable
    assert only_slurm.returncode == 1 and "1 error" in only_slurm.stdout and "1 skipped" in only_slurm.stdout


def test_unknown_service_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown service GPU"):
        services.needs("GPU", "")


def _skips(path: Path) -> list[tuple[int, str]]:
    """(line, what) of every skip in a test file that does not go through tests/services.py."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("skip", "skipif", "importorskip", "xfail"):
            owner = node.value
            names = {getattr(owner, "id", ""), getattr(owner, "attr", ""), getattr(getattr(owner, "value", None), "id", "")}
            if names & {"pytest", "mark"}:
                found.append((node.lineno, ast.get_source_segment(path.read_text(), node) or node.attr))
    return found


def test_every_skip_goes_through_the_services_rule() -> None:
    """A new `pytest.skip("no server")` would skip in CI as well, where the server must be there."""
    bad = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in ("services.py", "conftest.py"):  # the rule itself
            continue
        text = path.read_text().splitlines()
        for line, what in _skips(path):
            if not any(path.name == name and words in "\n".join(text[line - 1:line + 2]) for name, words in PLATFORM):
                bad.append(f"{path.name}:{line}: {what}")
    assert not bad, "skip through tests/services.py (needs / unavailable / extra):\n" + "\n".join(bad)


def test_the_suite_runner_covers_every_test_file_once_and_reports_a_crash(monkeypatch, capsys) -> None:
    """tests/suite.py (the README's test command) splits the files into three processes: none
    may fall between the groups, and a process killed by a signal fails the run by name."""
    import signal as signals

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import suite
    finally:
        sys.path.remove(str(ROOT / "tests"))
    grouped = [f for letters in suite.GROUPS for f in suite.group_files(letters)]
    assert sorted(grouped) == sorted(str(p) for p in (ROOT / "tests").glob("test_*.py"))
    assert len(set(grouped)) == len(grouped) and all(suite.group_files(g) for g in suite.GROUPS)
    codes = iter([0, -signals.SIGSEGV, 0])
    monkeypatch.setattr(suite.subprocess, "call", lambda argv, cwd: next(codes))
    assert suite.main(["-x"]) == 1
    assert "test_[h-r]* process died of SIGSEGV" in capsys.readouterr().err
    codes = iter([5, 0, 5])  # a selection that leaves a group empty is not a failure
    assert suite.main(["-k", "x"]) == 0
    codes = iter([0, 2, 1])
    assert suite.main([]) == 2
