"""Running the CLI in-process from tests."""

import pytest

from dinokit.cli import main


def run_cli(argv: list[str]) -> int:
    """Run `dinokit argv...` in this process; returns the exit code."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code
