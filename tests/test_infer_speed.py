"""Speed options: int8 quantisation, torch.compile, the allocator, batching by shape, and the
fast attention inside whole models (its own equality test is in test_model_definitions.py)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dinokit.infer import speed
from dinokit.runtime.allocator import tune_allocator
from dinokit.infer.evaluator import batches_by_shape
from dinokit.model import sampling
from dinokit.model.dino import build_model
from tests.cli_helpers import assert_same_detections, run_cli
from tests.model_helpers import micro_config


def _micro_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(micro_config(), load_weights=False).eval()


def _images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_int8_quantization_replaces_every_linear_and_stays_close():
    model = _micro_model()
    quantized = speed.prepare_for_inference(model, "int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert sum(isinstance(m, DynamicInt8Linear) for m in quantized.modules()) >= 30
    assert [n for n, m in quantized.named_modules() if type(m) is nn.Linear] == []
    assert any(type(m) is nn.Linear for m in model.modules())  # the fp32 model is left as it was
    # one encoder layer on the same input: close, not equal (a whole random-weight detector is not
    # a fair probe: its top-k query selection flips on tiny changes)
    g = torch.Generator().manual_seed(2)
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1)]
    S = sum(h * w for h, w in shapes)
    src, pos = torch.randn(2, S, 32, generator=g), torch.randn(2, S, 32, generator=g)
    ref_points = torch.rand(2, S, 4, 2, generator=g)
    mask = torch.zeros(2, S, dtype=torch.bool)
    with torch.inference_mode():
        ref = model.encoder.layers[0](src, pos, ref_points, shapes, mask)
        out = quantized.encoder.layers[0](src, pos, ref_points, shapes, mask)
    relative = ((out - ref).norm() / ref.norm()).item()
    assert 0 < relative < 0.05


def test_bad_quantize_value_is_a_config_error():
    with pytest.raises(speed.ConfigError, match="--quantize must be one of none, int8"):
        speed.check_quantize("int4")


def test_compiled_model_gives_the_eager_outputs():
    """torch.compile traces the whole detector (custom autograd function included); the eager
    backend keeps the test at seconds while still running dynamo over every module."""
    torch._dynamo.reset()
    model = _micro_model()
    x = _images()
    compiled = speed.compile_model(model, backend="eager")
    with torch.inference_mode():
        ref, out = model(x), compiled(x)
    assert torch.allclose(out["pred_logits"], ref["pred_logits"], atol=1e-5)
    assert torch.allclose(out["pred_boxes"], ref["pred_boxes"], atol=1e-5)


@pytest.mark.slow
def test_predict_compile_with_inductor_gives_the_eager_detections(tmp_path, monkeypatch):
    """`dinokit predict --compile` as users get it: torch.compile's default backend (inductor,
    C++ kernels built with the system compiler), the same detections as eager. One 96 px image and
    a micro model (one feature level, one decoder layer) keep the compile near a minute."""
    from dinokit.checkpoint import make_checkpoint, save_checkpoint
    from dinokit.config import load_preset

    cfg = load_preset("tiny")
    cfg.model = micro_config(num_classes=3, num_feature_levels=1, dec_layers=1)
    cfg.data.image_size = cfg.data.min_size = 96
    model = build_model(cfg.model, load_weights=False)
    for p in model.parameters():  # off the init, so that the scores are not all alike
        p.data.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, ["a", "b", "c"], [1, 2, 3]), tmp_path / "m.pt")
    from PIL import Image

    pixels = (torch.rand(96, 80, 3, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "img.png")
    options = []
    real_compile = speed.compile_model
    monkeypatch.setattr(speed, "compile_model", lambda m, **o: options.append(o) or real_compile(m, **o))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a real compile, not a cache hit
    torch._dynamo.reset()
    argv = ["predict", str(tmp_path / "img.png"), "--checkpoint", str(ckpt), "--score", "0", "--device", "cpu"]
    assert run_cli([*argv, "--out", str(tmp_path / "eager")]) == 0
    assert options == []
    assert run_cli([*argv, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    torch._dynamo.reset()
    assert options == [{}]  # torch.compile's defaults: the inductor backend
    assert list((tmp_path / "inductor").rglob("*.so")), "inductor built no C++ kernels"
    eager = json.loads((tmp_path / "eager" / "detections.json").read_text())
    compiled = json.loads((tmp_path / "compiled" / "detections.json").read_text())
    assert assert_same_detections(eager, compiled, score_tol=1e-3, box_tol=0.05) == cfg.model.num_select


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc-only")
def test_allocator_tuning_applies_once_on_glibc():
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent


class _FakeDataset:
    def __init__(self, coco: SimpleNamespace, ids: list[int]) -> None:
        self.coco, self.ids = coco, ids

    def __len__(self) -> int:
        return len(self.ids)


def test_eval_batches_group_similar_aspect_ratios():
    sizes = [(100, 50), (50, 100), (100, 52), (48, 100), (100, 100), (99, 101)]  # (w, h)
    coco = SimpleNamespace(imgs={i + 10: {"width": w, "height": h} for i, (w, h) in enumerate(sizes)})
    dataset = _FakeDataset(coco, [i + 10 for i in range(len(sizes))])
    batches = batches_by_shape(dataset, 2)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert [sorted(b) for b in batches] == [[0, 2], [4, 5], [1, 3]]  # wide, square, tall


def test_batches_by_aspect_groups_ratios_stably():
    from dinokit.data.transforms import batches_by_aspect

    shapes = [(50, 100), (100, 50), (52, 100), (100, 48), (100, 100), (101, 99), (10, 10)]  # (h, w)
    assert batches_by_aspect(shapes, 2) == [[0, 2], [4, 6], [5, 1], [3]]
    assert batches_by_aspect([(1, 1)] * 5, 2) == [[0, 1], [2, 3], [4]]  # equal ratios keep their order


def test_eval_and_predict_batch_by_the_one_rule(monkeypatch):
    """Evaluation and prediction both batch through data.transforms.batches_by_aspect."""
    from PIL import Image

    from dinokit.config import DataConfig
    from dinokit.data import transforms
    from dinokit.infer.predictor import Backend, detect_images

    seen = []
    real = transforms.batches_by_aspect

    def recording(shapes, batch_size):
        seen.append((list(shapes), batch_size))
        return real(shapes, batch_size)

    monkeypatch.setattr(transforms, "batches_by_aspect", recording)
    coco = SimpleNamespace(imgs={1: {"width": 80, "height": 40}, 2: {"width": 40, "height": 80}})
    assert batches_by_shape(_FakeDataset(coco, [1, 2]), 3) == [[0, 1]]
    sizes = [(64, 32), (32, 64), (48, 48)]  # (w, h) of PIL images
    empty = {"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    calls = []

    def detect(images, masks, orig):
        calls.append(orig.tolist())
        return [empty] * len(images)

    backend = Backend(detect, None, ["a"], [1])
    inputs = [(f"i{k}", Image.new("RGB", size)) for k, size in enumerate(sizes)]
    results = detect_images(backend, inputs, transforms.eval_transforms(DataConfig()), torch.device("cpu"), 2, 0.5)
    assert [r.source for r in results] == ["i0", "i1", "i2"]  # input order kept
    assert seen == [([(40, 80), (80, 40)], 3), ([(32, 64), (64, 32), (48, 48)], 2)]
    assert calls == [[[32, 64], [48, 48]], [[64, 32]]]  # wide with square, then tall


def test_fast_and_reference_attention_give_the_same_detector_outputs(monkeypatch):
    model = _micro_model()
    x = _images()
    with torch.inference_mode():
        fast = model(x)
        monkeypatch.setattr(sampling, "sample_levels_gather", sampling.sample_levels_grid)
        ref = model(x)
    assert (fast["pred_logits"] - ref["pred_logits"]).abs().max() < 1e-5
    assert (fast["pred_boxes"] - ref["pred_boxes"]).abs().max() < 1e-5


# ------------------------------------------------------------------ the CLI flags


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from tests.test_cli_e2e import SETS

    root = tmp_path_factory.mktemp("speed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        mp.chdir(root)
        assert run_cli(["train", "--steps", "1", "--batch-size", "4", "--name", "q", *SETS]) == 0
        yield root


def test_predict_and_eval_with_int8(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    ckpt = str(trained / "runs" / "train" / "q" / "best.pt")
    pics = trained / "pics"
    pics.mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(pics / "a.png")
    assert run_cli(["predict", "pics", "--checkpoint", ckpt, "--score", "0", "--quantize", "int8", "--out", "q8"]) == 0
    results = json.loads((trained / "q8" / "detections.json").read_text())
    assert len(results) == 1 and results[0]["detections"]
    assert run_cli(["eval", ckpt, "--quantize", "int8", "--json", "m8.json"]) == 0
    assert 0.0 <= json.loads((trained / "m8.json").read_text())["AP"] <= 1.0


def test_bad_quantize_flag_is_one_line_exit_2(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    capsys.readouterr()
    assert run_cli(["eval", "--quantize", "fp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --quantize must be one of none, int8, got 'fp4'"]


def test_train_compile_flag_compiles_the_training_model(trained, monkeypatch):
    """--compile compiles the training step (training/compiled.py, not infer/speed.py): the model
    and the criterion's three tensor parts; checkpoints are saved from the plain module."""
    from dinokit.training import compiled

    monkeypatch.chdir(trained)
    calls = []

    def eager_compile(fn, **options):
        calls.append(getattr(fn, "__name__", type(fn).__name__))
        return torch.compile(fn, backend="eager")

    monkeypatch.setattr(compiled, "compile_model", eager_compile)
    from tests.test_cli_e2e import SETS

    assert run_cli(["train", "--steps", "1", "--batch-size", "4", "--name", "c", "--compile", *SETS]) == 0
    torch._dynamo.reset()
    assert calls == ["DINO", "costs", "matched_loss", "denoising_loss"]
    from dinokit.interop.load import load_checkpoint

    ckpt = load_checkpoint(trained / "runs" / "train" / "c" / "last.pt")
    assert ckpt["config"]["train"]["compile"] is True
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])  # saved from the plain module


def test_int8_refuses_a_model_off_the_cpu():
    """--quantize int8 with device auto on a CUDA machine: one-line ConfigError, not a crash inside
    torch (a meta-device model stands in for a CUDA one here)."""
    from dinokit.config import ConfigError

    with pytest.raises(ConfigError, match="runs on the CPU only"):
        speed.prepare_for_inference(nn.Sequential(nn.Linear(4, 4)).to("meta"), "int8")


def test_int8_with_device_auto_on_a_cuda_machine_runs_on_the_cpu(trained, monkeypatch):
    """`auto` on a machine that reports CUDA: the int8 model is built and run on the CPU, and
    nothing touches CUDA first (there is no GPU here, so any CUDA call would raise)."""
    import dinokit
    from dinokit.runtime import device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_mod.resolve_device("auto") == torch.device("cuda", 0)  # auto would pick the GPU
    moved = []
    real_to = nn.Module.to

    def watched_to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args and not isinstance(args[0], torch.dtype) else None)
        if target is not None:  # .to(dtype) moves nothing
            moved.append(str(target))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", watched_to)
    detector = dinokit.load(trained / "runs" / "train" / "q" / "best.pt", device="auto", quantize="int8")
    assert detector.device == torch.device("cpu")
    assert moved and all(d == "cpu" for d in moved), moved
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert any(isinstance(m, DynamicInt8Linear) for m in detector._backend.model.modules())
    dets = detector.predict(torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0)), score=0.0)
    assert len(dets) == 1 and len(dets[0]) > 0


def test_int8_with_an_explicit_cuda_device_is_refused_before_loading(trained, monkeypatch, capsys):
    import dinokit
    from dinokit.config import ConfigError
    from dinokit.interop import load as load_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the device was refused")

    monkeypatch.setattr(load_mod, "model_from_checkpoint", no_loading)
    ckpt = str(trained / "runs" / "train" / "q" / "best.pt")
    with pytest.raises(ConfigError, match="runs on the CPU only, not on 'cuda'"):
        dinokit.load(ckpt, device="cuda", quantize="int8")
    monkeypatch.chdir(trained)
    assert run_cli(["eval", ckpt, "--device", "cuda:0", "--quantize", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --quantize int8 runs on the CPU only, not on 'cuda:0' (use --device cpu or auto)"]
