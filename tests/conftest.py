"""pytest settings for the test folder, and the rule of tests/services.py for `@needs` tests."""

from __future__ import annotations

import pytest

from tests import services

# A script the DDP tests launch with torchrun, not a test module: collecting it (say, with
# `pytest tests/*.py`) would run its argument parsing against pytest's own arguments.
collect_ignore = ["ddp_worker.py"]


def _absent(item: pytest.Item) -> list[tuple[str, str]]:
    """(service, why it is missing) for each absent service that `item` needs."""
    return [(mark.args[0], mark.args[1]) for mark in item.iter_markers("service") if mark.args[1]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test whose service is absent, and not required, skips (reported at the test's own line)."""
    for item in items:
        for name, missing in _absent(item):
            if not services.required(name):
                item.add_marker(pytest.mark.skip(reason=missing))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose service is absent but required (DINOKIT_REQUIRE_<NAME>=1) fails before it starts."""
    for name, missing in _absent(item):
        services.unavailable(name, missing)
