"""A model folder that the Hugging Face Hub and other tools understand (extra `[hub]`).

    OUT/config.json        the model configuration, classes, ids and score threshold (plain JSON)
    OUT/model.safetensors  the inference weights (EMA when training kept one); no pickle
    OUT/README.md          the model card (interop/card.py), Hub metadata block first

`folder_checkpoint` reads such a folder back into the checkpoint dict every loader takes
(interop/load.py calls it for a folder), so `dinokit.load("OUT/")`, `predict --checkpoint OUT/`,
eval, export and `train --weights OUT/` need nothing else. `hf://owner/name[@revision]` is
fetched with huggingface_hub's `snapshot_download` into its cache (HF_HOME; offline with
HF_HUB_OFFLINE=1 from what the cache holds), and `push_folder` uploads with `HfApi`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from dinokit.checkpoint import FORMAT, FORMAT_VERSION
from dinokit.errors import CheckpointError, DinokitError
from dinokit.files import atomic_path, write_json, write_text
from dinokit.version import __version__

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
HF_PREFIX = "hf://"
CARD_REPO = "OWNER/NAME"  # the Hub repository in the card's examples; `push_folder` puts the real one in
FOLDER_FORMAT = "dinokit-model-folder"
# checkpoint entries that config.json carries beside the configuration
CARRIED = ("classes", "cat_ids", "score_threshold", "metrics", "versions", "step", "epoch")


def require_package(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DinokitError(
            f"model folders need the '{module}' package: pip install 'dinokit[hub]' (huggingface_hub, safetensors)"
        ) from None


# --------------------------------------------------------------------------- where a model is


def hub_repo(source: str | Path) -> tuple[str, str | None] | None:
    """(repo id, revision or None) for `hf://owner/name[@revision]`, else None. `Path` folds the
    double slash ("hf:/owner/name"), so a flag typed as a path is recognised too."""
    text = str(source)
    if not text.startswith("hf:/"):
        return None
    repo, _, revision = text[len("hf:/"):].lstrip("/").partition("@")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo):
        raise DinokitError(f"{text}: a Hub model is hf://owner/name (optionally @revision)")
    return repo, revision or None


def resolve_source(source: str | Path) -> Path:
    """A local path for `source`: `hf://owner/name` is fetched from the Hub (or its cache) into
    huggingface_hub's cache and that snapshot folder is returned; anything else is returned as a
    Path unchanged."""
    found = hub_repo(source)
    if found is None:
        return Path(source)
    repo, revision = found
    require_package("huggingface_hub")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo, revision=revision, library_name="dinokit", library_version=__version__,
                                   allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    except LocalEntryNotFoundError:
        raise CheckpointError(f"hf://{repo}: not in the local Hugging Face cache and the Hub cannot be reached "
                              "(offline? HF_HUB_OFFLINE is set?)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"hf://{repo}: {str(exc).strip().splitlines()[0][:200]}") from None
    return Path(folder)


def is_model_folder(path: str | Path) -> bool:
    """A folder with the model folder's config.json (what `write_folder` writes)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------- write and read


def folder_config(ckpt: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """config.json: the dinokit configuration and classes, with the Hub's usual label maps."""
    classes = list(ckpt["classes"])
    return {
        "format": FOLDER_FORMAT, "format_version": FORMAT_VERSION, "library_name": "dinokit",
        "dinokit_version": __version__, "architecture": "DINO",
        "num_labels": len(classes),
        "id2label": {str(i): name for i, name in enumerate(classes)},
        "label2id": {name: i for i, name in enumerate(classes)},
        "config": ckpt["config"],
        **{key: ckpt[key] for key in CARRIED if key in ckpt},
        "parameters": int(sum(t.numel() for t in state.values() if t.is_floating_point())),
    }


def write_folder(ckpt: dict[str, Any], state: dict[str, torch.Tensor], out: str | Path, card: str) -> Path:
    """Write config.json, model.safetensors and README.md into `out` (each file atomically)."""
    require_package("safetensors")
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DinokitError(f"--out {out} is a file; a model folder is written into a folder")
    out.mkdir(parents=True, exist_ok=True)
    tensors = _unshared({k: v.detach().to("cpu").contiguous() for k, v in state.items()})
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "library": "dinokit", "dinokit_version": __version__})
    write_json(out / CONFIG_FILE, folder_config(ckpt, tensors))
    write_text(out / CARD_FILE, card)
    return out


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def folder_checkpoint(path: str | Path) -> dict[str, Any]:
    """A model folder as a dinokit checkpoint dict (weights on the CPU, no training state)."""
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FOLDER_FORMAT:
        raise CheckpointError(f"{path} is not a dinokit model folder ({CONFIG_FILE} has no format '{FOLDER_FORMAT}')")
    missing = [key for key in ("config", "classes", "cat_ids") if key not in meta]
    if missing:
        raise CheckpointError(f"{path / CONFIG_FILE} lacks {', '.join(missing)}")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}")
    require_package("safetensors")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is corrupt or not safetensors ({exc})") from None
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": state}
    ckpt.update({key: meta[key] for key in ("config", *CARRIED) if key in meta})
    return ckpt


# --------------------------------------------------------------------------- upload


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                message: str = "Upload a dinokit model") -> str:
    """Create the Hub repository `repo_id` (kept if it exists) and upload the model folder in one
    commit; returns the commit's URL. Needs the network and a token (HF_TOKEN, `hf auth login`
    or `token`)."""
    folder = Path(folder)
    if not is_model_folder(folder) or not (folder / WEIGHTS_FILE).is_file():
        raise DinokitError(f"{folder} is not a model folder (make one with: dinokit export --format hf --out {folder})")
    require_package("huggingface_hub")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DinokitError(f"'{repo_id}' is not a Hub repository id (owner/name): {exc}") from None
    if "/" not in repo_id:
        raise DinokitError(f"'{repo_id}' is not a Hub repository id: give owner/name")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        card = folder / CARD_FILE  # the repository exists: the card's examples name it
        if card.is_file() and CARD_REPO in (text := card.read_text(encoding="utf-8")):
            write_text(card, text.replace(CARD_REPO, repo_id))
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message=message, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    except OfflineModeIsEnabled:
        raise DinokitError("push needs the network, and HF_HUB_OFFLINE is set") from None
    except Exception as exc:  # noqa: BLE001 - no token, no network, no permission: the hub's and httpx's own types
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DinokitError(f"push to {repo_id} failed: {text}") from None
    return str(getattr(commit, "commit_url", commit))
