"""Reading a user's YAML file (config, study, search space, YOLO dataset): one place for the
three ways it goes wrong (missing, not YAML, not a mapping), each a one-line error of the
caller's class that names the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dinokit.errors import DinokitError


def read_mapping(path: Path, what: str, error: type[DinokitError], shape: str = "a mapping",
                 empty_ok: bool = False) -> dict[str, Any]:
    """`path` parsed with yaml.safe_load; `what` names the file's role ("config file") and
    `shape` what its top level must be ("a mapping of sections"). An empty file is {} when
    `empty_ok`, else it is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{what} {path} must be {shape}")
    return raw
