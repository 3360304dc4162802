#!/usr/bin/env bash
# The installed package is the product: build the sdist and the wheel, check their metadata, install
# the wheel into a fresh venv and run the main commands from a folder outside the clone (no source
# tree on sys.path), then compare the wheel's files with the package's modules and data files.
# Called at the end of .ci/run with .venv active; runs alone too: `. .venv/bin/activate && .ci/wheel_check.sh`.
# The fresh venv takes the tested torch pair (and the other dependencies) from .venv through a .pth
# file, as the lowest-versions block does, so no multi-GB download; the wheel itself goes in with
# --no-deps --ignore-installed, and every dependency it declares is then checked to be present.
set -euo pipefail
cd "$(dirname "$0")/.."
CLONE="$(pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m pip install --quiet build twine
python -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
python -m twine check --strict "$WORK"/dist/*
WHEEL="$(ls "$WORK"/dist/*.whl)"

python -m venv "$WORK/venv"
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib "$(python -c 'import sys; print(sys.prefix)')" > "$(purelib "$WORK/venv")/zz-tested-torch.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --ignore-installed "$WHEEL"
"$WORK/venv/bin/python" - <<'PY'
from importlib.metadata import requires, version

from packaging.requirements import Requirement

for text in requires("dinokit"):  # every dependency the wheel declares is there, at an allowed version
    req = Requirement(text)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        assert req.specifier.contains(version(req.name), prereleases=True), f"{req}: found {version(req.name)}"
print("the wheel's dependencies are met")
PY

# From a folder outside the clone, with nothing of the clone on the path.
mkdir "$WORK/user"
cd "$WORK/user"
unset PYTHONPATH
export PATH="$WORK/venv/bin:$PATH" DINOKIT_CACHE="$WORK/cache"
python - "$CLONE" <<'PY'
import sys
from pathlib import Path

import dinokit

clone, where = Path(sys.argv[1]).resolve(), Path(dinokit.__file__).resolve()
assert not where.is_relative_to(clone), f"dinokit imported from the clone: {where}"
print(f"dinokit {dinokit.__version__} imported from {where.parent}")
PY
want="dinokit $(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$CLONE/dinokit/version.py")"
got="$(dinokit --version)"
[ "$got" = "$want" ] || { echo "dinokit --version says '$got', expected '$want'"; exit 1; }
SMALL=(--set data.shapes_train=8 --set data.shapes_val=4 --set data.image_size=64 --set data.min_size=64
       --set model.backbone=mobilenet_v3_small --set model.enc_layers=1 --set model.dec_layers=2
       --set model.num_queries=20 --set model.dn_number=6 --set train.batch_size=4)
dinokit train --steps 3 --logger mlflow "${SMALL[@]}"   # the [mlflow] extra's path: a sqlite store in the run
python - <<'PY'
from mlflow.tracking import MlflowClient

client = MlflowClient(tracking_uri="sqlite:///runs/train/exp/mlflow.db")
(run,) = client.search_runs([client.get_experiment_by_name("dinokit").experiment_id])
assert run.info.status == "FINISHED" and run.data.tags["preset"] == "tiny" and "val/AP" in run.data.metrics, run
assert "checkpoint" in {a.path for a in client.list_artifacts(run.info.run_id)}
print("mlflow run", run.info.run_id, "logged from the wheel")
PY
python -c 'from PIL import Image; Image.new("RGB", (64, 48), (200, 120, 40)).save("photo.png")'
dinokit predict photo.png --score 0 --out pred --json pred.json
test -s pred.json && test -n "$(ls pred)"
dinokit export --format hf --out model-folder          # the [hub] extra's path: a model folder with its card
test -s model-folder/config.json && test -s model-folder/model.safetensors && grep -q '^library_name: dinokit' model-folder/README.md
dinokit predict photo.png --checkpoint model-folder --score 0 --out pred-folder --json pred-folder.json
python -c 'import json, sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); assert [r["detections"] for r in a] == [r["detections"] for r in b]' pred.json pred-folder.json
# The [slice] and [track] extras' import paths from the installed wheel: sliced prediction, tracking on a clip.
dinokit predict photo.png --slice 32 --overlap 0.25 --score 0 --out pred_sliced --json pred_sliced.json
test -s pred_sliced.json
python - <<'PY'
import av
from PIL import Image

with av.open("clip.mp4", mode="w") as container:
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for k in range(3):
        for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", (64, 48), (40 * k, 120, 200)))):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
PY
dinokit predict clip.mp4 --track --score 0 --out tracked
grep -q '"track_id"' tracked/clip.jsonl
# The [openvino] extra's import path (in .venv through the [test] extra): the IR, and a prediction from it.
dinokit export --format openvino --out ir
test -s ir/model.xml && test -s ir/model.bin
dinokit predict photo.png --checkpoint ir/model.xml --score 0 --out pred_ov --json pred_ov.json
test -s pred_ov.json
python -c 'import nncf, dinokit.infer.openvino_int8, dinokit.infer.graph_module'
# the shipped files come from the installed package (ablations/ mapped in as dinokit/ablations/); the
# listings are read whole first (grep -q leaving a pipe early would fail the writer under pipefail)
studies="$(dinokit ablate --list-studies)" spaces="$(dinokit tune --list-spaces)"
grep -q "^paper_table .*/site-packages/dinokit/ablations/studies/paper_table.yaml$" <<<"$studies"
grep -q "^tune_tiny .*/site-packages/dinokit/ablations/spaces/tune_tiny.yaml$" <<<"$spaces"
dinokit ablate --study paper_table --steps 2 --seeds 1 "${SMALL[@]}"
test -s runs/ablate/paper_table/report.md
dinokit tune --space tune_tiny --trials 1 --steps 2 "${SMALL[@]}"
test -s runs/tune/tune_tiny/trials.csv

# The wheel holds exactly the package's files: every module and data file, nothing else.
cd "$CLONE"
python - "$WHEEL" <<'PY'
import subprocess
import sys
import zipfile
from pathlib import Path

in_wheel = {n for n in zipfile.ZipFile(sys.argv[1]).namelist() if not n.split("/")[0].endswith(".dist-info")}
try:  # a clean clone: the tracked files; elsewhere every file but caches
    listed = subprocess.run(["git", "ls-files", "dinokit", "ablations"], capture_output=True, text=True,
                            check=True).stdout.split()
except (OSError, subprocess.CalledProcessError):
    listed = [str(p) for folder in ("dinokit", "ablations") for p in Path(folder).rglob("*") if p.is_file()]
# the repository's ablations/ is dinokit/ablations/ in the wheel (pyproject.toml: package-dir)
listed = ["dinokit/" + p if p.startswith("ablations/") else p for p in listed]
package = {p for p in listed if "__pycache__" not in p and not p.endswith(".pyc")}
assert {"dinokit/ablations/studies/paper_table.yaml", "dinokit/ablations/spaces/tune_tiny.yaml"} <= in_wheel
missing, extra = sorted(package - in_wheel), sorted(in_wheel - package)
assert not missing, f"files of the package missing from the wheel (declare them in pyproject.toml): {missing}"
assert not extra, f"files in the wheel that are not the package's: {extra}"
print(f"wheel check: {len(in_wheel)} package files in {Path(sys.argv[1]).name}, none missing, none extra")
PY
