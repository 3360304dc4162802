"""Fine-tuning a detector checkpoint with other training-only query aids than it was trained with:
the one-to-one group's learned rows come from the checkpoint, the extra rows stay fresh."""

from __future__ import annotations

import pytest
import torch

from dinokit.errors import CheckpointError
from dinokit.interop.load import QUERY_ROWS, load_initial_weights
from dinokit.model.dino import build_model
from model_helpers import micro_config

CLASSES = ["a", "b", "c", "d", "e"]


def _model(seed: int, **aids) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(micro_config(queries="static", **aids), load_weights=False)


def _ckpt(model: torch.nn.Module) -> dict:
    return {"model": {k: v.clone() for k, v in model.state_dict().items()}, "classes": CLASSES,
            "config": {"model": {"num_queries": model.cfg.num_queries}}}


@pytest.mark.parametrize("src, dst", [({}, {"query_groups": 3, "one_to_many_queries": 6}),
                                      ({"query_groups": 3, "one_to_many_queries": 6}, {}),
                                      ({"query_groups": 2}, {"query_groups": 3})])
def test_group_zero_from_the_checkpoint_other_rows_fresh(src, dst) -> None:
    trained, fresh = _model(0, **src), _model(1, **dst)
    before = {k: fresh.state_dict()[k].clone() for k in QUERY_ROWS}
    line = load_initial_weights(fresh, _ckpt(trained), CLASSES)
    K = fresh.cfg.num_queries
    for key in QUERY_ROWS:
        now, old = fresh.state_dict()[key], trained.state_dict()[key]
        assert torch.equal(now[:K], old[:K])
        assert torch.equal(now[K:], before[key][K:])  # the training-only rows keep their own init
        assert not torch.equal(now[:K], before[key][:K])
    assert "group 0" in line
    name = next(n for n, _ in fresh.named_parameters() if n.startswith("decoder."))
    assert torch.equal(dict(fresh.named_parameters())[name], dict(trained.named_parameters())[name])


def test_same_aids_load_every_row_and_another_query_count_is_refused() -> None:
    trained, fresh = _model(0, query_groups=3), _model(1, query_groups=3)
    line = load_initial_weights(fresh, _ckpt(trained), CLASSES)
    assert torch.equal(fresh.state_dict()[QUERY_ROWS[0]], trained.state_dict()[QUERY_ROWS[0]])
    assert "group 0" not in line
    torch.manual_seed(1)
    other = build_model(micro_config(queries="static", num_queries=20), load_weights=False)
    with pytest.raises(CheckpointError, match="tgt_embed"):
        load_initial_weights(other, _ckpt(trained), CLASSES)
