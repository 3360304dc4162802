"""Every command refuses to write over a file it reads: pointed at its own input (the checkpoint,
the data, a study file, the image), it prints one `error:` line, exits 2, and the input is
byte-identical afterwards. The guard sits in the one writer (dinokit/files.py): each command
declares its inputs once, and the readers add what they discover (the dataset's files). The
last test lists every command of the CLI: a new one fails it until it has a test here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image

import dinokit
from dinokit.cli import app
from dinokit.errors import DataError
from tests.cli_helpers import run_cli
from tests.test_api import FAST, SHAPES


class Run:
    """A run folder as training leaves it (config.yaml, best.pt, last.pt), with untrained weights:
    every refusal comes before the weights matter."""

    def __init__(self, root: Path) -> None:
        from dinokit.checkpoint import make_checkpoint, save_checkpoint
        from dinokit.config import apply_overrides, load_preset, save_yaml
        from dinokit.model.dino import build_model

        cfg = apply_overrides(load_preset("tiny"), [*FAST, f"train.out={root / 'runs'}", "train.name=api"])
        cfg.model.num_classes = len(SHAPES)
        self.dir = root / "runs" / "train" / "api"
        self.dir.mkdir(parents=True)
        state = build_model(cfg.model, load_weights=False).state_dict()
        ckpt = make_checkpoint(state, cfg, sorted(SHAPES), list(range(1, len(SHAPES) + 1)))
        save_checkpoint(ckpt, self.dir / "best.pt")
        shutil.copy(self.dir / "best.pt", self.dir / "last.pt")  # never read: the refusal comes first
        save_yaml(cfg, self.dir / "config.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return Run(tmp_path_factory.mktemp("guards"))


@pytest.fixture(scope="module")
def detector(run: Run):
    return dinokit.load(run.dir / "best.pt", "cpu")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/eval/expN, ...) land in the test's folder
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(capsys, argv: list[str], *inputs: Path, words: str = "") -> str:
    """Run `dinokit argv`: one error line naming the clash, exit 2, every input unchanged."""
    before = {p: digest(p) for p in inputs}
    code = run_cli([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert "would overwrite the input" in err and words in err, err
    assert {p: digest(p) for p in inputs} == before
    return err


def coco_folder(root: Path) -> Path:
    """A two-image COCO dataset: annotations/instances_{train,val}.json and images/."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in (1, 2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64})
    data = {"images": images, "categories": [{"id": 1, "name": "circle"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20]}]}
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


# --------------------------------------------------------------------------- the model's commands


def test_eval_never_writes_over_its_checkpoint_or_data(run, tmp_path, capsys):
    ckpt = run.dir / "best.pt"
    refused(capsys, ["eval", ckpt, "--json", ckpt, "--device", "cpu"], ckpt, words="--json")
    refused(capsys, ["eval", ckpt, "--detections", run.dir / "." / "best.pt", "--device", "cpu"], ckpt,
            words="--detections")
    data = coco_folder(tmp_path / "d")
    ann = data / "annotations" / "instances_val.json"
    image = data / "images" / "1.png"
    # the data's files are inputs too: refused as the data is resolved, before the evaluation runs
    refused(capsys, ["eval", ckpt, "--data", data, "--json", ann, "--device", "cpu"], ann, words="instances_val.json")
    refused(capsys, ["eval", ckpt, "--data", ann, "--detections", image, "--device", "cpu"], image, ann)


def test_detector_evaluate_never_writes_detections_over_its_inputs(detector, run, tmp_path):
    ckpt = run.dir / "best.pt"
    before = digest(ckpt)
    with pytest.raises(DataError, match="would overwrite the input .*best.pt"):
        detector.evaluate(detections=ckpt)
    data = coco_folder(tmp_path / "d")
    ann = data / "annotations" / "instances_train.json"
    with pytest.raises(DataError, match="instances_train.json would overwrite the input"):
        detector.evaluate(data=str(data), split="train", detections=ann)
    assert digest(ckpt) == before and json.loads(ann.read_text())["images"][0]["file_name"] == "1.png"


def test_export_never_writes_over_its_checkpoint(run, detector, tmp_path, capsys):
    ckpt = run.dir / "best.pt"
    refused(capsys, ["export", ckpt, "--out", ckpt], ckpt, words="--out")
    (tmp_path / "model.onnx").symlink_to(ckpt)  # the checkpoint under another name
    refused(capsys, ["export", ckpt, "--out", tmp_path / "model.onnx"], ckpt)
    with pytest.raises(DataError, match="would overwrite the input"):
        detector.export(ckpt)
    assert (tmp_path / "model.onnx").is_symlink()


def test_convert_official_never_writes_over_its_source(tmp_path, capsys):
    source = tmp_path / "official.pth"
    source.write_bytes(b"an official checkpoint")  # refused before it is read
    refused(capsys, ["convert", "official", source, "--out", source], source, words="--out")
    os.link(source, tmp_path / "hard.pt")  # a hard link: the same file by another name
    refused(capsys, ["convert", "official", source, "--out", tmp_path / "hard.pt"], source)


def test_resumed_training_never_rewrites_a_file_it_started_from(run, tmp_path, capsys):
    """A resumed run rewrites its config.yaml, best.pt and last.pt: when the user names one of them
    as --config or --weights, the run is refused before its first step."""
    runs = tmp_path / "runs"
    shutil.copytree(run.dir, runs / "train" / "api")
    folder = runs / "train" / "api"
    base = ["train", "--resume", "--out", runs, "--name", "api", "--device", "cpu"]
    refused(capsys, [*base, "--config", folder / "config.yaml"], folder / "config.yaml", folder / "last.pt",
            words="--resume (config.yaml)")
    refused(capsys, [*base, "--weights", folder / "best.pt"], folder / "best.pt", folder / "last.pt",
            words="--resume (best.pt)")


def test_explain_never_writes_over_its_image_or_boxes(run, tmp_path, capsys):
    ckpt = run.dir / "best.pt"
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photos / "selection.png"  # the name of one of explain's figures
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    refused(capsys, ["explain", image, "--checkpoint", ckpt, "--out", photos, "--device", "cpu"], image,
            words="selection.png")
    assert sorted(p.name for p in photos.iterdir()) == ["selection.png"]  # refused before the first file
    out = tmp_path / "out"
    out.mkdir()
    boxes = out / "explain.json"
    boxes.write_text(json.dumps([{"box": [4, 4, 30, 30], "label": "circle"}]))
    refused(capsys, ["explain", image, "--checkpoint", ckpt, "--boxes", boxes, "--out", out, "--device", "cpu"],
            boxes, words="explain.json")


# --------------------------------------------------------------------------- data


def test_data_check_never_writes_over_the_dataset(tmp_path, capsys):
    data = coco_folder(tmp_path / "d")
    ann = data / "annotations" / "instances_train.json"
    refused(capsys, ["data", "check", data, "--json", ann], ann, words="--json")
    refused(capsys, ["data", "check", ann, "--json", ann], ann)
    image = data / "images" / "2.png"
    refused(capsys, ["data", "check", data, "--json", data / "annotations" / ".." / "images" / "2.png"], image)


def test_data_convert_never_writes_over_the_source_files(tmp_path, capsys):
    from tests.test_data_cli import _tiny_voc

    voc = _tiny_voc(tmp_path / "voc")
    xml = voc / "Annotations" / "a.xml"
    os.link(xml, tmp_path / "coco.json")  # --out must be .json: a hard link is how it can be an input
    refused(capsys, ["data", "convert", voc, "--from", "voc", "--out", tmp_path / "coco.json"], xml, words="--out")
    (tmp_path / "picture.json").symlink_to(voc / "JPEGImages" / "b.jpg")
    refused(capsys, ["data", "convert", voc, "--from", "voc", "--out", tmp_path / "picture.json"],
            voc / "JPEGImages" / "b.jpg")
    assert run_cli(["data", "convert", str(voc), "--from", "voc", "--out", str(voc / "coco.json")]) == 0
    assert run_cli(["data", "convert", str(voc), "--from", "voc", "--out", str(voc / "coco.json")]) == 0  # its own output


# --------------------------------------------------------------------------- studies


def test_tune_never_writes_over_its_space_file(tmp_path, capsys):
    from dinokit.studies.shipped import shipped

    folder = tmp_path / "runs" / "tune" / "s"
    folder.mkdir(parents=True)
    space = folder / "best.yaml"  # the file tune writes its best configuration to
    shutil.copy(shipped("tune")["tune_tiny"], space)
    refused(capsys, ["tune", "--space", space, "--name", "s", "--out", tmp_path / "runs", "--steps", "1",
                     "--trials", "1"], space, words="--out (best.yaml)")
    assert sorted(p.name for p in folder.iterdir()) == ["best.yaml"]  # refused before any trial


def test_ablate_never_writes_over_its_study_file(tmp_path, capsys):
    from dinokit.studies.shipped import shipped

    study = tmp_path / "study.yaml"
    shutil.copy(shipped("ablate")["paper_table"], study)
    folder = tmp_path / "runs" / "ablate" / "s"
    folder.mkdir(parents=True)
    os.link(study, folder / "report.md")
    refused(capsys, ["ablate", "--study", study, "--name", "s", "--out", tmp_path / "runs", "--steps", "1",
                     "--seeds", "1"], study, words="--out (report.md)")
    assert sorted(p.name for p in folder.iterdir()) == ["report.md"]  # refused before any trial


# --------------------------------------------------------------------------- every command


GUARDED = {  # command -> the test above that points it at its own input
    "train": test_resumed_training_never_rewrites_a_file_it_started_from,
    "eval": test_eval_never_writes_over_its_checkpoint_or_data,
    "predict": "tests/test_predict_outputs.py",  # images, videos, the JSON onto an input
    "export": test_export_never_writes_over_its_checkpoint,
    "convert official": test_convert_official_never_writes_over_its_source,
    "explain": test_explain_never_writes_over_its_image_or_boxes,
    "data check": test_data_check_never_writes_over_the_dataset,
    "data convert": test_data_convert_never_writes_over_the_source_files,
    "tune": test_tune_never_writes_over_its_space_file,
    "ablate": test_ablate_never_writes_over_its_study_file,
}
NO_INPUT_TO_GUARD = {
    "info": "writes no file (prints)",
    "data shapes": "reads nothing; --out must be missing or empty",
    "ablate report": "reads the study's storage, which no report file can be",
    "push": "names no output: it rewrites only the model card that export wrote (weights and config declared)",
}


def commands() -> set[str]:
    """Every command a user can run, as typed after `dinokit` ("data check", "ablate", ...)."""
    found = set()

    def walk(cmd: Any, name: str) -> None:  # click's Command / Group (typer may vendor click)
        if hasattr(cmd, "commands"):
            if name and cmd.invoke_without_command:  # `dinokit ablate` runs on its own
                found.add(name)
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}".strip())
        else:
            found.add(name)

    walk(typer.main.get_command(app), "")
    return found


def test_every_command_is_pointed_at_its_own_input_somewhere():
    """A new command must come with a test here (and declare its inputs: the CLI's writer refuses
    to write for a command that did not, see tests/test_files.py)."""
    assert commands() == set(GUARDED) | set(NO_INPUT_TO_GUARD)
    assert Path(__file__).with_name("test_predict_outputs.py").is_file()
