"""Turn a `--device` string into a `torch.device`, failing early with a clear message.

Asking for an accelerator that is not there is a user error (one line), not a CUDA traceback
deep inside the first forward pass.
"""

from __future__ import annotations

import os

import torch

from dinokit.errors import DinokitError


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else cpu; `cpu`; `cuda` / `cuda:N`; `mps`."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DinokitError(f"device '{spec}' requested but CUDA is not available (use --device cpu)")
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise DinokitError(f"bad device '{spec}': expected cuda or cuda:N")
        index = int(index_text)
        count = torch.cuda.device_count()
        if index >= count:
            raise DinokitError(f"device '{spec}' requested but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DinokitError("device 'mps' requested but MPS is not available (use --device cpu)")
        return torch.device("mps")
    raise DinokitError(f"unknown device '{spec}' (choose auto, cpu, cuda, cuda:N or mps)")


def process_device(spec: str) -> torch.device:
    """The device of this process: under torchrun, CUDA runs use `cuda:$LOCAL_RANK`."""
    device = resolve_device(spec)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return device
