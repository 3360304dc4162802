"""The study files and search spaces that ship with dinokit: `dinokit ablate --study NAME` and
`dinokit tune --space NAME` find them by name from any install (a wheel as well as a clone), and
`--list-studies` / `--list-spaces` print them with their paths.

Their one home is `ablations/` at the top of the repository (`studies/` and `spaces/`), where a
user reads and copies them. The build maps that folder into every wheel as `dinokit/ablations/`
(pyproject.toml, `package-dir`); a clone or an editable install reads the repository's own.
"""

from __future__ import annotations

from pathlib import Path

from dinokit.errors import DinokitError

KINDS = {"ablate": ("study file", "--list-studies"), "tune": ("search space file", "--list-spaces")}
FOLDERS = {"ablate": "studies", "tune": "spaces"}  # ablations/<folder>/NAME.yaml
_PACKAGE = Path(__file__).resolve().parents[1]  # dinokit/


def home() -> Path:
    """The ablations/ folder: inside the installed package (a wheel), else beside it (a clone)."""
    for folder in (_PACKAGE / "ablations", _PACKAGE.parent / "ablations"):
        if (folder / "studies").is_dir():
            return folder
    raise DinokitError(f"the shipped study files are missing: no ablations/ in {_PACKAGE} or beside it "
                       "(reinstall dinokit)")


def shipped(kind: str) -> dict[str, Path]:
    """Name -> path of every shipped file for `kind` ("ablate" or "tune"), sorted by name."""
    folder = home() / FOLDERS[kind]
    return dict(sorted((path.stem, path) for path in folder.glob("*.yaml")))


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
