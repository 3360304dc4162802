"""`--deterministic` on CUDA, exercised on the CPU: the sampling's value-gradient scatter takes a
sorted, deterministic form on an accelerator (same gradients as the normal form), an op without
a deterministic kernel there stops training with one line, and the decisions are made from the
device (a `torch.device("cuda")` object needs no GPU)."""

from __future__ import annotations

import pytest
import torch

from dinokit.errors import DinokitError
from dinokit.model import sampling
from dinokit.model.dino import build_model
from dinokit.training.rng import nondeterminism_error, seed_everything
from tests.model_helpers import make_targets, micro_config
from tests.test_model_definitions import _random_sampling_inputs


@pytest.fixture
def deterministic_mode():
    """torch's global deterministic setting, put back afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _spy(monkeypatch) -> dict[str, int]:
    calls = {"index_put_": 0, "index_add_": 0}
    for name in calls:
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_the_deterministic_scatter_is_chosen_on_an_accelerator_only(deterministic_mode):
    torch.use_deterministic_algorithms(False)
    assert not sampling.deterministic_scatter(torch.device("cuda", 0))
    torch.use_deterministic_algorithms(True, warn_only=True)
    assert sampling.deterministic_scatter(torch.device("cuda", 0))
    assert sampling.deterministic_scatter(torch.device("mps"))
    assert not sampling.deterministic_scatter(torch.device("cpu"))  # index_add_ adds in order there


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_scatter_gives_the_normal_gradients(dtype, monkeypatch, deterministic_mode):
    monkeypatch.setattr(sampling, "_SCATTER_ROWS", 7)  # several chunks
    calls = _spy(monkeypatch)

    def grads() -> tuple[torch.Tensor, ...]:
        value, shapes, locations, weights = (
            t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in _random_sampling_inputs(dtype)
        )
        out = sampling.sample_levels_gather(value, shapes, locations, weights)
        return torch.autograd.grad(out, (value, locations, weights), torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out))

    normal = grads()
    assert calls == {"index_put_": 0, "index_add_": -(-2 * 23 * 3 // 7)}  # (batch, query, head) rows in chunks of 7
    torch.use_deterministic_algorithms(True, warn_only=True)
    monkeypatch.setattr(sampling, "deterministic_scatter", lambda device: True)  # as on a GPU
    calls.update(index_put_=0, index_add_=0)
    ordered, again = grads(), grads()
    assert calls["index_add_"] == 0 and calls["index_put_"] > 0
    for a, b, c in zip(normal, ordered, again):
        assert torch.equal(a, b) and torch.equal(b, c)
    assert normal[0].abs().sum() > 0


def test_a_whole_detector_has_the_same_gradients_with_the_deterministic_scatter(monkeypatch, deterministic_mode):
    cfg = micro_config()
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).train()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = make_targets([2, 3], seed=3)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(5)  # the same denoising noise
        out = model(images, None, targets)
        (out["pred_logits"].sum() + out["pred_boxes"].sum() + out["dn"].boxes.sum()).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    normal = grads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    monkeypatch.setattr(sampling, "deterministic_scatter", lambda device: True)
    ordered = grads()
    assert len(normal) == len(ordered) > 10
    for a, b in zip(normal, ordered):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_deterministic_training_is_strict_on_an_accelerator(monkeypatch, deterministic_mode):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, True, torch.device("cuda", 0))
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # deterministic cuBLAS workspaces
    seed_everything(0, True, torch.device("cpu"))
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def _nondeterministic_op() -> None:
    """An op torch refuses in strict deterministic mode on any device (put_ without accumulate)."""
    torch.zeros(4).put_(torch.tensor([1]), torch.tensor([1.0]))


def test_an_op_without_a_deterministic_kernel_becomes_one_line(deterministic_mode):
    torch.use_deterministic_algorithms(True)
    with pytest.raises(RuntimeError) as caught:
        _nondeterministic_op()
    err = nondeterminism_error(caught.value, torch.device("cuda", 0))
    assert isinstance(err, DinokitError) and "\n" not in str(err)
    assert str(err).startswith(f"--deterministic on cuda: torch {torch.__version__} has no deterministic kernel for put_")
    assert nondeterminism_error(RuntimeError("CUDA out of memory"), torch.device("cuda", 0)) is None
    assert nondeterminism_error(ValueError("x does not have a deterministic implementation"), torch.device("cpu")) is None


def test_train_deterministic_refusal_is_one_line_exit_2(tmp_path, monkeypatch, capsys, deterministic_mode):
    """The trainer seeds with its device, and an op without a deterministic kernel in the step
    ends as one `error:` line (here a real torch refusal raised inside the first step)."""
    from dinokit.training import trainer as trainer_mod
    from tests.cli_helpers import run_cli
    from tests.test_cli_e2e import SETS

    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    seeded = []
    real_seed = trainer_mod.seed_everything
    monkeypatch.setattr(trainer_mod, "seed_everything", lambda *a: seeded.append(a) or real_seed(*a))

    def refusing_step(self, *args):
        torch.use_deterministic_algorithms(True)  # strict, as seed_everything makes it on a GPU
        _nondeterministic_op()

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", refusing_step)
    assert run_cli(["train", "--steps", "1", "--batch-size", "2", "--name", "d", "--deterministic", *SETS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --deterministic on cpu: torch ") and "put_" in err[0]
    assert (seeded[0][1], seeded[0][2]) == (True, torch.device("cpu"))
