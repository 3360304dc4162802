"""pyproject.toml's dependencies are the true ones: every third-party package dinokit imports is
declared (a direct import of a transitive dependency cannot hide), and each lower bound is the
version .ci/lowest.txt installs for the lowest-versions test run."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml"}  # import name -> distribution name
TESTED_PAIR = {"torch": "2.14.1", "torchvision": "0.29.1"}  # installed by .ci/run itself


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _lower_bounds() -> dict[str, str]:
    bounds = {}
    for req in _project()["dependencies"]:
        found = re.search(r">=\s*([0-9][0-9a-z.]*)", req)
        assert found, f"{req}: every dependency needs a lower bound"
        bounds[_name(req)] = found.group(1)
    return bounds


def _imported_packages() -> set[str]:
    names = set()
    for path in (ROOT / "dinokit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "dinokit"}


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_every_imported_package_is_declared():
    project = _project()
    declared = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    missing = {IMPORT_TO_DIST.get(n, n).lower() for n in _imported_packages()} - declared - extras
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_lower_bounds_are_the_lowest_tested_versions():
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    pins.update(TESTED_PAIR)
    bounds = _lower_bounds()
    assert set(pins) == set(bounds), "lowest.txt + the tested pair must pin exactly the direct dependencies"
    for name, bound in bounds.items():
        assert _release(bound) == _release(pins[name]), f"{name}: pyproject allows >={bound}, CI tests {pins[name]}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(f"{n}=={v}" in ci for n, v in TESTED_PAIR.items())


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_dir(package: str) -> Path:
    """Where a package's files are in the repository: `package-dir`'s mapping, else its name."""
    mapping = _setuptools().get("package-dir", {})
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in mapping:
            return ROOT / mapping[".".join(parts[:i])] / Path(*parts[i:])
    return ROOT / Path(*parts)


def test_every_package_is_listed_and_ablations_is_mapped_in():
    """pyproject.toml names the packages one by one (one of them, dinokit.ablations, is the
    repository's ablations/): a new folder under dinokit/ missing from the list would be missing
    from every wheel."""
    listed = _setuptools()["packages"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dinokit").rglob("__init__.py")}
    assert set(listed) - found == {"dinokit.ablations", "dinokit.ablations.studies", "dinokit.ablations.spaces"}
    assert found <= set(listed), f"packages missing from pyproject.toml: {sorted(found - set(listed))}"
    assert _setuptools()["package-dir"] == {"dinokit.ablations": "ablations"}
    assert not (ROOT / "dinokit" / "ablations").exists()  # one copy: the build maps it in, nothing is generated
    for package in listed:
        assert _package_dir(package).is_dir(), package


def test_every_data_file_of_the_package_is_declared_package_data():
    """A wheel holds the .py modules and what `[tool.setuptools.package-data]` names: a data file
    added under dinokit/ or ablations/ without a matching pattern would be missing from every install."""
    from fnmatch import fnmatch

    declared = _setuptools()["package-data"]
    data = [p for folder in ("dinokit", "ablations") for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert {p.parent.name for p in data if p.suffix == ".yaml"} == {"studies", "spaces"}  # what ships
    for path in data:
        owners = [(pkg, pat) for pkg, pats in declared.items() for pat in pats
                  if path.is_relative_to(_package_dir(pkg))
                  and fnmatch(path.relative_to(_package_dir(pkg)).as_posix(), pat)]
        assert owners, f"{path.relative_to(ROOT)} is not package data in pyproject.toml: no wheel would hold it"


def test_version_has_one_home_and_the_cli_prints_it(capsys):
    from dinokit.version import __version__
    from tests.cli_helpers import run_cli

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dinokit.version.__version__"}
    assert run_cli(["--version"]) == 0 and capsys.readouterr().out == f"dinokit {__version__}\n"
    assert run_cli(["info", "--json", "--size", "64", "--set", "model.backbone=mobilenet_v3_small"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"]["dinokit"] == __version__  # as checkpoints record it


def test_the_python_versions_agree():
    """One lowest Python: requires-python, the classifiers, the README and the interpreter running
    these tests (tomllib, imported above, is 3.11's) agree on it."""
    project = _project()
    found = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"].split("#")[0].strip())
    assert found, project["requires-python"]
    lowest = (3, int(found.group(1)))
    named = sorted((3, int(c.rsplit(".", 1)[1])) for c in project["classifiers"]
                   if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert named and named[0] == lowest, f"classifiers name {named}, requires-python {lowest}"
    assert sys.version_info[:2] >= lowest
    readme = (ROOT / "README.md").read_text()
    assert f"Python {lowest[0]}.{lowest[1]} or newer" in readme
    older = {f"3.{m}" for m in range(lowest[1])}
    assert not older & set(re.findall(r"Python (3\.\d+)", readme)), "the README names an older Python"


def test_licence_file_matches_the_metadata():
    project = _project()
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert project["requires-python"] and project["urls"] and project["classifiers"]


def test_every_folder_the_ci_script_creates_is_ignored_by_git():
    """.ci/run makes its virtual environments inside the clone: `git status` must not offer them."""
    from fnmatch import fnmatch

    script = (ROOT / ".ci" / "run").read_text()
    created = set(re.findall(r'-m venv "?([\w.\-]+)"?', script))
    created |= set(re.findall(r"\$\{\w+:-([\w.\-]+)\}", script))  # "${LOW_VENV:-.venv-lowest}"
    assert {".venv", ".venv-lowest"} <= created, created
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "!"))]
    assert all(any(fnmatch(folder, p) for p in patterns) for folder in created), (created, patterns)
