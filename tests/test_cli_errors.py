"""Every bad input ends as one `error: ...` line on stderr, exit code 2, and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dinokit.cli import main

SMALL_DATA = ["--set", "data.shapes_train=4", "--set", "data.shapes_val=2", "--set", "data.shapes_size=64"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def fails(capsys, argv: list[str], expected: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--queries", "sideways"], "model.queries must be one of mixed, pure, static"),
    (["train", "--denoising", "maybe"], "model.denoising must be one of cdn, dn, none"),
    (["train", "--attention", "sparse"], "model.attention must be one of"),
    (["train", "--neg-target", "nearest"], "model.neg_target must be one of"),
    (["train", "--dn-draws", "3"], "model.dn_draws must be 1 or 2"),
    (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["train", "--batch-size", "0"], "train.batch_size must be positive"),
    (["train", "--device", "tpu"], "train.device must be auto, cpu"),
    (["train", "--no-cdn", "--no-dn"], "contradict"),
    (["train", "--denoising", "cdn", "--no-dn"], "contradict"),
    (["train", "--epochs", "2", "--steps", "3"], "choose one"),
    (["train", "--set", "model.nope=1"], "unknown option 'model.nope'"),
    (["train", "--set", "nonsense"], "--set expects key=value"),
    (["train", "--set", "model.hidden_dim=abc"], "model.hidden_dim must be an integer"),
    (["train", "--config", "missing.yaml"], "config file not found"),
    (["train", "--resume"], "cannot resume"),
    (["train", "--resume", "--name", "ghost"], "cannot resume"),
    (["train", "--bogus-flag"], "No such option"),
    (["frobnicate"], "No such command"),
    (["eval", "missing.pt"], "checkpoint not found: missing.pt"),
    (["eval"], "no training run found"),
    (["predict"], "Missing argument"),
    (["predict", "nothere.png"], "image not found: nothere.png"),
    (["predict", "img.png", "--score", "2"], "--score must be in [0, 1]"),
    (["predict", "img.png", "--score", "nan"], "--score must be in [0, 1]"),
    (["predict", "img.png", "--batch-size", "0"], "--batch-size must be positive"),
    (["info", "--size", "12xfoo"], "--size must look like HxW"),
    (["info", "--preset", "huge"], "unknown preset 'huge'"),
    (["info", "--set", "model.backbone=nonsense_net", "--size", "64"], "unknown backbone 'nonsense_net'"),
])
def test_bad_input_is_one_line(capsys, argv, expected):
    fails(capsys, argv, expected)


def test_missing_data_path(capsys):
    fails(capsys, ["train", "--data", "/no/such/dataset", "--steps", "1"], "data path does not exist")


def test_json_that_is_not_coco(capsys, tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([1, 2, 3]))
    fails(capsys, ["train", "--data", "list.json", "--steps", "1"], "is not COCO detection JSON")
    (tmp_path / "broken.json").write_text("{not json")
    fails(capsys, ["train", "--data", "broken.json", "--steps", "1"], "not valid JSON")


def test_unknown_backbone_in_training(capsys):
    fails(capsys, ["train", "--backbone", "nonsense_net", "--steps", "1", *SMALL_DATA], "unknown backbone")


def test_cuda_requested_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(capsys, ["train", "--device", "cuda", "--steps", "1"], "CUDA is not available")


def test_bad_checkpoints(capsys, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04garbage")
    fails(capsys, ["eval", "corrupt.pt"], "corrupt or not a torch checkpoint")
    (tmp_path / "pickle.pt").write_bytes(b"\x00garbage")
    fails(capsys, ["eval", "pickle.pt"], "cannot be loaded safely")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    fails(capsys, ["eval", "foreign.pt"], "not a dinokit checkpoint")
    (tmp_path / "img.png").write_bytes(b"")  # never read: the checkpoint fails first
    fails(capsys, ["predict", "img.png", "--checkpoint", "missing.pt"], "checkpoint not found")


def test_predict_on_a_file_that_is_not_an_image(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.pt").write_bytes(b"x")
    line = fails(capsys, ["predict", "notes.txt", "--checkpoint", "fake.pt"], "cannot read image notes.txt")
    assert "not an image file" in line
    (tmp_path / "empty").mkdir()
    fails(capsys, ["predict", "empty", "--checkpoint", "fake.pt"], "no images found in folder empty")
    fails(capsys, ["predict", "pics/*.jpg", "--checkpoint", "fake.pt"], "no files match pics/*.jpg")


def test_real_entry_point_reports_one_line(tmp_path):
    """`python -m dinokit` (the console script's code path) in a fresh process."""
    env = {**os.environ, "DINOKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "dinokit", "train", "--preset", "nope"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown preset 'nope' (choose from tiny, r50-4scale, r50-5scale)"


def test_worker_processes_end_user_errors_as_one_line(capsys):
    """ablate and tune workers share errors.run_worker: one `[worker PID] error: ...` line, exit 2;
    Ctrl-C exits 130; a bug keeps its traceback."""
    from dinokit.errors import DataError, run_worker

    def bad_input() -> None:
        raise DataError("annotations.json:\n  no images")

    def interrupted() -> None:
        raise KeyboardInterrupt

    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(SystemExit) as info:
        run_worker(bad_input)
    assert info.value.code == 2
    assert capsys.readouterr().out.splitlines() == [f"[worker {os.getpid()}] error: annotations.json: no images"]
    with pytest.raises(SystemExit) as info:
        run_worker(interrupted)
    assert info.value.code == 130
    with pytest.raises(ZeroDivisionError):
        run_worker(bug)
