"""On a CUDA GPU: a micro model trains, evaluates and predicts there, and the GPU's detections are
the CPU's (every tensor's device explicit: nothing assumes the CPU). Skips without a GPU;
DINOKIT_REQUIRE_CUDA=1 makes it required (tests/services.py)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import dinokit
from tests.services import cuda_missing, needs
from tests.test_api import FAST

pytestmark = needs("CUDA", cuda_missing())


def test_train_evaluate_and_predict_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    run = dinokit.train(data="shapes", steps=4, batch_size=4, seed=1, device="cuda", out=str(tmp_path / "runs"),
                        name="gpu", overrides=FAST)
    assert run.steps == 4 and not run.interrupted and (run.dir / "best.pt").is_file()
    gpu, cpu = run.detector("cuda"), run.detector("cpu")
    assert gpu.device.type == "cuda" and cpu.device.type == "cpu"
    metrics = gpu.evaluate()
    assert 0.0 <= metrics["AP"] <= 1.0 and set(metrics["per_class"]) == set(gpu.class_names)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8), "RGB")
    on_gpu, on_cpu = gpu.predict(photo, score=0.0)[0], cpu.predict(photo, score=0.0)[0]
    assert len(on_gpu) == len(on_cpu) > 0
    top = min(10, len(on_cpu))  # the best detections agree; far down the list, near ties may swap
    assert np.allclose(on_gpu.scores[:top], on_cpu.scores[:top], atol=1e-3)
    assert np.allclose(on_gpu.xyxy[:top], on_cpu.xyxy[:top], atol=0.05)
    assert isinstance(on_gpu.xyxy, np.ndarray) and torch.cuda.memory_allocated() > 0
