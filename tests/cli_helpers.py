"""Running the CLI in-process from tests."""

import pytest

from dinokit.cli import main


def run_cli(argv: list[str]) -> int:
    """Run `dinokit argv...` in this process; returns the exit code."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def assert_same_detections(a: list[dict], b: list[dict], score_tol: float, box_tol: float) -> int:
    """Two `dinokit predict` JSON files hold the same detections: per image the same file and size,
    and every detection of `a` has one of its own in `b` with the same label, a score within
    `score_tol` and a box within `box_tol` pixels (order may differ only among near-equal scores).
    Returns how many detections were compared."""
    assert [(r["file"], r["width"], r["height"]) for r in a] == [(r["file"], r["width"], r["height"]) for r in b]
    compared = 0
    for ra, rb in zip(a, b):
        left, right = ra["detections"], list(rb["detections"])
        assert len(left) == len(right), (ra["file"], len(left), len(right))
        for i, da in enumerate(left):
            near = [j for j, db in enumerate(right) if db is not None and db["label"] == da["label"]
                    and abs(db["score"] - da["score"]) <= score_tol
                    and max(abs(x - y) for x, y in zip(da["box"], db["box"])) <= box_tol]
            assert near, f"{ra['file']}: detection {i} {da} has no match in the other file"
            right[min(near, key=lambda j: abs(j - i))] = None  # the nearest in rank order
            compared += 1
    return compared
