"""A model folder for the Hugging Face Hub (extra [hub]): `dinokit export --format hf` writes
config.json, model.safetensors (no pickle) and a README.md model card whose metadata the Hub
library parses; the folder loads from disk and as hf://owner/name from a pre-filled Hugging Face
cache with HF_HUB_OFFLINE=1, and predicts exactly what its checkpoint predicts; `dinokit push`
makes the Hub calls it should (the upload itself needs a token and the network: stood in for).

Skips without huggingface_hub / safetensors; with DINOKIT_REQUIRE_EXTRAS=1 (CI) that is a failure
(tests/services.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import FAST

extra("huggingface_hub", "hub")
extra("safetensors", "hub")

import huggingface_hub  # noqa: E402
from huggingface_hub import ModelCard  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import dinokit  # noqa: E402
from dinokit.checkpoint import inference_state, read_torch_file, save_checkpoint  # noqa: E402
from dinokit.interop.hub import CARD_REPO, folder_checkpoint  # noqa: E402
from dinokit.version import __version__  # noqa: E402

REPO = "dinokit-tests/micro-shapes"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real micro run (EMA on, so the folder must hold the EMA weights) and its folder."""
    root = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        run = dinokit.train(data="shapes", steps=3, batch_size=4, seed=3, out=str(root / "runs"), name="hub",
                            overrides=[*FAST, "train.eval_every_steps=2", "train.ema=true", "train.ema_decay=0.5",
                                       "train.tensorboard=false"])
        folder = root / "micro-shapes"
        assert run_cli(["export", str(run.dir / "best.pt"), "--format", "hf", "--out", str(folder)]) == 0
        images = sorted((root / "cache").rglob("val/*.jpg"))[:3]
        yield root, run.dir / "best.pt", folder, images


def test_folder_holds_config_weights_and_card_no_pickle(exported):
    _, best, folder, _ = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    ckpt = read_torch_file(best)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["classes"] == ckpt["classes"] and meta["cat_ids"] == ckpt["cat_ids"]
    assert meta["id2label"] == {str(i): c for i, c in enumerate(ckpt["classes"])}
    assert meta["config"]["model"]["hidden_dim"] == 32 and meta["library_name"] == "dinokit"
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # safetensors: a JSON header, raw tensors
    assert header["__metadata__"]["format"] == "pt"
    state, expected = load_file(folder / "model.safetensors"), inference_state(ckpt)
    assert ckpt["ema"] and set(state) == set(expected)  # the EMA copy, as evaluation used
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert any(not torch.equal(state[k], ckpt["model"][k]) for k in expected)  # not the raw weights


def test_card_metadata_follows_the_hub_conventions(exported):
    _, best, folder, _ = exported
    ckpt = read_torch_file(best)
    card = ModelCard.load(folder / "README.md")  # the Hub library's own parser
    data = card.data
    assert data.library_name == "dinokit" and data.pipeline_tag == "object-detection"
    assert {"object-detection", "dino", "dinokit", "preset-tiny"} <= set(data.tags)
    results = {r.metric_name: r for r in data.eval_results}
    metrics = ckpt["metrics"]
    assert results["AP (IoU 0.50:0.95)"].metric_value == pytest.approx(100 * metrics["AP"], abs=0.006)
    assert results["AP50"].metric_value == pytest.approx(100 * metrics["AP50"], abs=0.006)
    assert results["AP50"].task_type == "object-detection" and results["AP50"].dataset_split == "val"
    per_class = {k: v for k, v in metrics["per_class"].items() if v == v}
    assert {f"AP ({c})" for c in per_class} <= set(results)
    text = card.text
    for heading in ("## Classes", "## Training data", "## Evaluation", "### Score threshold",
                    "## Training configuration", "## Intended use and limits", "## Versions"):
        assert heading in text
    assert all(f"`{c}`" in text for c in ckpt["classes"])
    assert f"torch {torch.__version__}" in text and f"dinokit {__version__}" in text
    assert "8 training and 4 validation images" in text  # the data it was trained on
    threshold = metrics.get("score_threshold")
    if threshold == threshold and threshold is not None:
        assert f"**{threshold:.4g}**" in text
    else:
        assert "No F1-optimal threshold" in text


def test_folder_predicts_exactly_what_its_checkpoint_predicts(exported, tmp_path):
    root, best, folder, images = exported
    assert images
    from_ckpt, from_folder = dinokit.load(best, "cpu"), dinokit.load(folder, "cpu")
    assert from_folder.class_names == from_ckpt.class_names and from_folder.score_threshold == from_ckpt.score_threshold
    for a, b in zip(from_ckpt.predict(images, score=0.0), from_folder.predict(images, score=0.0)):
        assert len(a) > 0 and a.xyxy.tobytes() == b.xyxy.tobytes() and a.scores.tobytes() == b.scores.tobytes()
        assert a.labels.tolist() == b.labels.tolist() and a.category_ids == b.category_ids
    outs = {}
    for name, source in (("ckpt", best), ("folder", folder)):
        argv = ["predict", *map(str, images), "--checkpoint", str(source), "--score", "0", "--device", "cpu",
                "--out", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json")]
        assert run_cli(argv) == 0
        outs[name] = [r["detections"] for r in json.loads((tmp_path / f"{name}.json").read_text())]
    assert outs["ckpt"] == outs["folder"] and sum(map(len, outs["ckpt"])) > 0


def fill_hub_cache(hf_home: Path, repo: str, folder: Path) -> Path:
    """The Hugging Face cache layout as the hub library writes it: content-addressed blobs, a
    snapshot folder of relative symlinks per commit, refs/main naming the commit."""
    owner, name = repo.split("/")
    root = hf_home / "hub" / f"models--{owner}--{name}"
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()
    snapshot = root / "snapshots" / commit
    for d in (root / "blobs", snapshot, root / "refs"):
        d.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        blob = hashlib.sha256(path.read_bytes()).hexdigest()
        (root / "blobs" / blob).write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    (root / "refs" / "main").write_text(commit)
    return snapshot


OFFLINE_SCRIPT = """
import contextlib, io, json, sys
import dinokit
from dinokit.cli import main

repo, images, commands = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
d = dinokit.load("hf://" + repo, "cpu")
out = {"source": str(d.source), "dets": [x.to_dict()["detections"] for x in d.predict(images, score=0.0)], "cli": []}
for argv in commands:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            out["cli"].append([exc.code, err.getvalue()])
print(json.dumps(out))
"""


def test_hf_uri_loads_offline_from_a_prefilled_cache(exported, tmp_path):
    """In a fresh process with HF_HOME at the pre-filled cache and HF_HUB_OFFLINE=1 (the hub
    library reads both when imported): the API, `predict --checkpoint hf://...`, and the one-line
    errors of a repository the cache lacks and of `push` offline."""
    root, _, folder, images = exported
    hf_home = tmp_path / "hf"
    snapshot = fill_hub_cache(hf_home, REPO, folder)
    info = huggingface_hub.scan_cache_dir(hf_home / "hub")  # the hub library reads the layout back
    (repo,) = info.repos
    assert repo.repo_id == REPO and {f.file_name for r in repo.revisions for f in r.files} == \
        {"README.md", "config.json", "model.safetensors"}
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "DINOKIT_CACHE": str(root / "cache")}
    env.pop("HF_HUB_CACHE", None)
    predict = ["predict", str(images[0]), "--checkpoint", f"hf://{REPO}", "--score", "0", "--device", "cpu",
               "--out", str(tmp_path / "pred"), "--json", str(tmp_path / "hf.json")]
    missing = [a if a != f"hf://{REPO}" else "hf://dinokit-tests/not-cached" for a in predict]
    commands = [predict, missing, ["push", str(folder), REPO]]
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, REPO, json.dumps(list(map(str, images))),
                           json.dumps(commands)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(got["source"]).resolve() == snapshot.resolve()
    local = [x.to_dict()["detections"] for x in dinokit.load(folder, "cpu").predict(images, score=0.0)]
    assert got["dets"] == local and sum(map(len, local)) > 0
    (code, _), (code_missing, err_missing), (code_push, err_push) = got["cli"]
    assert code == 0 and json.loads((tmp_path / "hf.json").read_text())[0]["detections"] == local[0]
    assert code_missing == 2 and err_missing.startswith("error: hf://dinokit-tests/not-cached: not in the local "
                                                        "Hugging Face cache") and err_missing.count("\n") == 1
    assert code_push == 2 and err_push == "error: push needs the network, and HF_HUB_OFFLINE is set\n"
    assert CARD_REPO in (folder / "README.md").read_text()  # a failed push leaves the folder as it was


def test_push_creates_the_repo_and_uploads_the_folder(exported, tmp_path, monkeypatch):
    _, _, folder, _ = exported
    copy = tmp_path / "to-push"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert CARD_REPO in (copy / "README.md").read_text()
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw.pop("repo_id"), kw))
        assert sorted(p.name for p in Path(kw["folder_path"]).iterdir()) == ["README.md", "config.json",
                                                                            "model.safetensors"]
        return SimpleNamespace(commit_url=f"https://huggingface.co/{REPO}/commit/{'1' * 40}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert run_cli(["push", str(copy), REPO, "--private", "--message", "first model"]) == 0
    (create, repo_id, kw), (upload, repo_up, up) = calls
    assert (create, repo_id, upload, repo_up) == ("create_repo", REPO, "upload_folder", REPO)
    assert kw == {"repo_type": "model", "private": True, "exist_ok": True}
    assert up["folder_path"] == str(copy) and up["commit_message"] == "first model" and up["repo_type"] == "model"
    card = (copy / "README.md").read_text()
    assert CARD_REPO not in card and f'dinokit.load("hf://{REPO}")' in card  # the card names the real repository
    assert ModelCard(card).data.library_name == "dinokit"


def test_push_and_export_bad_input_is_one_line(exported, tmp_path, capsys):
    _, _, folder, _ = exported
    assert run_cli(["push", str(tmp_path), REPO]) == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert run_cli(["push", str(folder), "not a repo id"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert run_cli(["export", str(folder), "--format", "hf", "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_broken_folder_is_a_checkpoint_error(exported, tmp_path, capsys):
    _, _, folder, images = exported
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(dinokit.errors.CheckpointError, match="corrupt or not safetensors"):
        folder_checkpoint(broken)
    (broken / "config.json").write_text('{"format": "something-else"}')
    assert run_cli(["predict", str(images[0]), "--checkpoint", str(broken), "--out", str(tmp_path / "p")]) == 2
    assert "not a dinokit model folder" in capsys.readouterr().err


def test_a_folder_reexports_and_fine_tunes_like_its_checkpoint(exported, tmp_path, monkeypatch, capsys):
    root, _, folder, _ = exported
    again = tmp_path / "again"
    dinokit.load(folder, "cpu").export(again, format="hf")
    a, b = load_file(folder / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta_a, meta_b = (json.loads((f / "config.json").read_text()) for f in (folder, again))
    assert meta_a["config"] == meta_b["config"] and meta_a["metrics"] == meta_b["metrics"]
    monkeypatch.setenv("DINOKIT_CACHE", str(root / "cache"))
    run = dinokit.train(weights=str(folder), steps=1, batch_size=4, out=str(tmp_path / "runs"), name="ft",
                        overrides=["train.tensorboard=false", "train.eval_every_steps=1"], progress=True)
    assert "loaded every tensor of the detector checkpoint" in capsys.readouterr().out
    assert run.detector("cpu").config.model.hidden_dim == 32  # the folder's configuration, no preset given


def _study_trainer(cfg, on_epoch=None, **kw):
    """A stand-in trainer for the study (no training): no-cdn 5 AP points below full, every seed."""
    from dataclasses import dataclass

    @dataclass
    class Result:
        run_dir: Path
        best: dict
        history: list
        params: int = 1000
        interrupted: bool = False
        steps: int = 2

    ap = 0.30 + 0.01 * (cfg.train.seed % 3) - (0.05 if cfg.model.denoising == "dn" else 0.0)
    run_dir = Path(cfg.train.out) / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"step": 1, "AP": ap - 0.1, "AP50": ap}, {"step": 2, "AP": ap, "AP50": ap + 0.2}]
    for row in rows:
        if on_epoch is not None:
            on_epoch(row)
    return Result(run_dir, {"AP": ap, "AP50": ap + 0.2}, rows)


def test_card_of_a_study_trial_shows_the_study_verdicts(exported, tmp_path):
    """A checkpoint whose labels name an ablation study (as a trial's do) gets the verdicts of
    that study's rendered report."""
    from dinokit.ablate import study as study_mod
    from dinokit.ablate.arms import leave_one_out
    from dinokit.ablate.report import render
    from dinokit.config import load_preset

    _, best, _, _ = exported
    cfg = load_preset("tiny")
    cfg.train.steps, cfg.train.time_budget = 2, 0.0
    spec = study_mod.AblationSpec("cdn-study", leave_one_out(["no-cdn"]), [1, 2, 3, 4], cfg, tmp_path / "cdn-study",
                                  trainer=_study_trainer)
    study_mod.run(spec, say=lambda m: None)
    render(spec.storage, spec.name, spec.out_dir, explore=(1.0, "AP"), gallery=False)
    report = (spec.out_dir / "report.md").read_text()
    verdicts = report.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in verdicts.splitlines() if line.startswith("| no-cdn vs full"))
    ckpt = read_torch_file(best)
    ckpt["config"]["train"].update(out=str(spec.out_dir), tags={"preset": "tiny", "study": "cdn-study",
                                                                "arm": "no-cdn", "seed": "2"})
    trial = save_checkpoint(ckpt, tmp_path / "trial.pt")
    dinokit.load(trial, "cpu").export(tmp_path / "trial-folder", format="hf")
    text = ModelCard.load(tmp_path / "trial-folder" / "README.md").text
    assert "## Ablation study" in text and "trial `no-cdn` (seed 2) of the ablation study `cdn-study`" in text
    assert row in text and "![" not in text.split("## Ablation study")[1].split("\n## ")[0]
    # without verdicts (no margin): the card says how to get them and shows the results table
    render(spec.storage, spec.name, spec.out_dir, gallery=False)
    dinokit.load(trial, "cpu").export(tmp_path / "no-verdicts", format="hf")
    text = (tmp_path / "no-verdicts" / "README.md").read_text()
    assert "has no verdicts yet" in text and "dinokit ablate report cdn-study --margin 1" in text
