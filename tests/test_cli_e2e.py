"""The CLI on a real (very small) training run: train, eval, predict, info, resume, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from dinokit.interop.load import load_checkpoint
from dinokit.infer.draw import draw_scale
from tests.cli_helpers import run_cli

FAST = [
    "data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.hidden_dim=32", "model.nheads=2", "model.enc_layers=1",
    "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=20", "model.dn_number=10",
    "model.num_select=20",
]
SETS = [arg for item in FAST for arg in ("--set", item)]



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def run_dir(workdir) -> Path:
    code = run_cli(["train", "--steps", "2", "--batch-size", "4", "--name", "cli", "--seed", "3", "--ema", *SETS])
    assert code == 0
    return workdir / "runs" / "train" / "cli"


def test_train_cli_writes_run(run_dir, capsys):
    for name in ("config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt"):
        assert (run_dir / name).is_file()
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["train"]["seed"] == 3 and ckpt["config"]["train"]["ema"]
    assert ckpt["config"]["model"]["backbone"] == "mobilenet_v3_small"


def test_eval_latest_checkpoint(run_dir, workdir, capsys):
    capsys.readouterr()
    assert run_cli(["eval", "--json", "metrics.json", "--detections", "dets.json"]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "AP per class" in out and "runs/train/cli/best.pt" in out
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    assert set(metrics["per_class"]) <= {"circle", "ring", "square", "diamond", "triangle", "arrow"}
    dets = json.loads((workdir / "dets.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])


def test_eval_writes_diagnostics_for_a_split(run_dir, workdir, capsys):
    capsys.readouterr()
    assert run_cli(["eval", "--split", "train", "--out", "diag", "--json", "train_metrics.json"]) == 0
    out = capsys.readouterr().out
    assert "train split" in out and "diagnostics in diag" in out
    metrics = json.loads((workdir / "train_metrics.json").read_text())
    assert {"score_threshold", "P", "R", "F1", "AR100", "per_class_prf"} <= set(metrics)
    for name in ("pr_curve.png", "f1_curve.png", "confusion_matrix.png", "confusion_matrix.csv",
                 "confusion_matrix_normalised.csv", "per_class.csv"):
        assert (workdir / "diag" / name).is_file(), name
    counts = pd.read_csv(workdir / "diag" / "confusion_matrix.csv", index_col=0)
    assert list(counts.index)[-1] == list(counts.columns)[-1] == "background"
    # every training box is matched or missed: the rows of the true classes hold them all
    train = json.loads((workdir / "cache" / "shapes").glob("*/annotations/instances_train.json").__next__().read_text())
    assert int(counts.iloc[:-1].to_numpy().sum()) == len(train["annotations"])
    assert run_cli(["eval", "--split", "test", "--out", "diag2"]) == 2  # shapes has no test split
    assert "has no test split" in capsys.readouterr().err
    assert run_cli(["eval", "--split", "dev"]) == 2
    assert "--split must be train, val or test" in capsys.readouterr().err


def test_predict_uses_the_stored_threshold_unless_score_is_given(run_dir, workdir, capsys):
    from dinokit.checkpoint import save_checkpoint

    ckpt = load_checkpoint(run_dir / "best.pt")
    ckpt["score_threshold"] = 0.25
    save_checkpoint(ckpt, workdir / "thr.pt")
    image = next((workdir / "cache" / "shapes").glob("*/val/*.jpg"))
    capsys.readouterr()
    assert run_cli(["predict", str(image), "--checkpoint", "thr.pt", "--out", "p1"]) == 0
    assert ">= 0.25 (the checkpoint's F1-optimal threshold)" in capsys.readouterr().out
    (kept,) = json.loads((workdir / "p1" / "detections.json").read_text())
    assert all(d["score"] >= 0.25 for d in kept["detections"])
    assert run_cli(["predict", str(image), "--checkpoint", "thr.pt", "--out", "p2", "--score", "0"]) == 0
    assert ">= 0 (given)" in capsys.readouterr().out
    (everything,) = json.loads((workdir / "p2" / "detections.json").read_text())
    assert len(everything["detections"]) == 20 >= len(kept["detections"])  # num_select
    import dinokit

    assert dinokit.load(workdir / "thr.pt", "cpu").score_threshold == 0.25


def test_predict_folder_and_glob(run_dir, workdir, capsys, monkeypatch):
    pics = workdir / "pics"
    pics.mkdir()
    rng = torch.Generator().manual_seed(0)
    for name, (w, h) in {"a.png": (64, 48), "b.jpg": (50, 70), "c.png": (80, 80)}.items():
        pixels = (torch.rand(h, w, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(pics / name)
    assert run_cli(["predict", "pics", "--checkpoint", str(run_dir / "best.pt"), "--score", "0", "--out", "pred"]) == 0
    results = json.loads((workdir / "pred" / "detections.json").read_text())
    assert [Path(r["file"]).name for r in results] == ["a.png", "b.jpg", "c.png"]
    for r in results:
        assert 0 < len(r["detections"]) <= 20  # num_select; score 0 keeps all
        assert all(0 <= d["box"][0] <= d["box"][2] <= r["width"] for d in r["detections"])
        assert r["detections"][0]["label"] in {"circle", "ring", "square", "diamond", "triangle", "arrow"}
        drawn = Image.open(r["output"])  # small images are upscaled for drawing, aspect kept
        scale = draw_scale(r["width"], r["height"])
        assert scale > 1 and drawn.size == (round(r["width"] * scale), round(r["height"] * scale))
    # a glob, the default checkpoint and a threshold, on hand-set scores (a 2-step model's are all low)
    import dataclasses

    from dinokit.infer import predictor

    real_load = predictor.load_backend

    def hand_set(*args, **kwargs):
        def detect(images, masks, orig_sizes):
            boxes = torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 3)
            return [{"scores": torch.tensor([0.995, 0.99, 0.9899]), "labels": torch.tensor([0, 1, 2]),
                     "boxes": boxes} for _ in images]

        return dataclasses.replace(real_load(*args, **kwargs), detect=detect)

    monkeypatch.setattr(predictor, "load_backend", hand_set)
    assert run_cli(["predict", "pics/*.png", "--score", "0.99", "--json", "few.json", "--out", "pred2"]) == 0
    few = json.loads((workdir / "few.json").read_text())
    assert [[d["score"] for d in r["detections"]] for r in few] == [[0.995, 0.99]] * 2


def test_info_json(capsys):
    capsys.readouterr()
    assert run_cli(["info", "--size", "64x96", "--json", *SETS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["total"] > 0 and summary["gflops"] > 0 and summary["size"] == [64, 96]


def test_resume_cli_uses_the_runs_config(run_dir):
    # no --set: the run's own config.yaml (tiny model, 8 images) must be used, not the preset's
    assert run_cli(["train", "--resume", "--name", "cli", "--steps", "3"]) == 0
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["model"]["backbone"] == "mobilenet_v3_small"
    assert [row["step"] for row in ckpt["history"]] == [2, 3]


def test_sigterm_saves_last_and_exits_cleanly(workdir):
    env = {**os.environ, "DINOKIT_CACHE": str(workdir / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dinokit", "train", "--steps", "500", "--batch-size", "2", "--name", "term", *SETS]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, proc.kill)  # reading stdout blocks: a hung run must still end the test
    watchdog.start()
    try:
        deadline = time.monotonic() + 150
        for line in proc.stdout:
            if line.startswith("step 1/500"):
                break
            assert time.monotonic() < deadline, "training did not start"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: interrupted at step") and "dinokit train --resume" in err
    step = int(err.split("interrupted at step ")[1].split(":")[0])
    ckpt = load_checkpoint(workdir / "runs" / "train" / "term" / "last.pt")
    assert ckpt["step"] == step >= 1
