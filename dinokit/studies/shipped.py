"""The study files and search spaces that ship inside the package: `dinokit ablate --study NAME`
and `dinokit tune --space NAME` find them by name from any install (a wheel as well as a clone),
and `--list-studies` / `--list-spaces` print them with their paths. They are package data
(dinokit/studies/files/<command>/NAME.yaml), read through importlib.resources: the one copy."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dinokit.errors import DinokitError

KINDS = {"ablate": ("study file", "--list-studies"), "tune": ("search space file", "--list-spaces")}


def shipped(kind: str) -> dict[str, Path]:
    """Name -> path of every shipped file for `kind` ("ablate" or "tune"), sorted by name. The
    package is installed as files (pip unpacks wheels), so each resource is a real path."""
    folder = resources.files("dinokit.studies").joinpath("files", kind)
    found = {item.name[:-len(".yaml")]: Path(str(item)) for item in folder.iterdir() if item.name.endswith(".yaml")}
    return dict(sorted(found.items()))


def find(arg: str | Path, kind: str, error: type[DinokitError] = DinokitError) -> Path:
    """The file `arg` names: an existing path, else a shipped file of that name (`paper_table`
    or `paper_table.yaml`, without a folder). Neither: one line naming what ships."""
    path = Path(arg)
    if path.is_file():
        return path
    names = shipped(kind)
    if path.parent == Path(".") and path.suffix in ("", ".yaml") and path.stem in names:
        return names[path.stem]
    what, flag = KINDS[kind]
    raise error(f"{what} not found: {arg} (shipped: {', '.join(names)}; see dinokit {kind} {flag})")


def listing(kind: str) -> str:
    """The shipped names and their paths, one per line, for `--list-studies` / `--list-spaces`."""
    names = shipped(kind)
    width = max(map(len, names), default=0)
    return "\n".join(f"{name:<{width}}  {path}" for name, path in names.items())
