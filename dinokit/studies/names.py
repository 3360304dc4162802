"""Names that become folder names and study names (`--name`, arm names): one rule for all."""

from __future__ import annotations

import re

from dinokit.errors import DinokitError

NAME_RE = re.compile(r"^[A-Za-z0-9+][A-Za-z0-9._+-]*$")
NAME_RULE = "may only use letters, digits and . _ + -"


def valid_name(name: str) -> bool:
    """Usable as a folder name on every system and in a study name: no spaces, no slashes."""
    return bool(NAME_RE.match(name))


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is valid, else one clear error naming the flag."""
    if not valid_name(name):
        raise DinokitError(f"{what} '{name}' {NAME_RULE}")
    return name
