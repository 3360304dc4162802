"""Numeric precision of a run: fp32, bf16 or fp16 autocast, and `auto`, which picks for the device.

One switch (`train.precision`, `--precision`) serves training, evaluation and prediction.
Low precision is `torch.autocast` around the forward (and the loss, which turns itself back to
fp32): matmuls and convolutions run in bf16/fp16, while the parts that must stay fp32 (the
deformable sampling, box refinement, proposal top-K, matcher and losses) disable autocast
themselves. fp16 needs a `GradScaler` against underflowing gradients; it is used on CUDA only,
and fp16 on a CPU is refused (bf16 is the CPU's low precision).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ContextManager

import torch

from dinokit.config import Config, ConfigError, apply_dict

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_capability() -> str:
    """torch's name for the CPU's vector ISA (e.g. AVX2, AVX512); a seam for tests."""
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU does bf16 arithmetic natively (avx512_bf16 or AMX): elsewhere bf16 is
    emulated and slower than fp32."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags) or "AMX" in cpu_capability().upper()


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, a one-line note saying what `auto` chose and why; "" otherwise).

    Raises ConfigError for an unknown name and for fp16 anywhere but CUDA: `grad_scaler` has a
    GradScaler only there, and fp16 training without one underflows its gradients."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    if name == "auto":
        if device.type == "cuda":
            chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            why = "the GPU supports bf16" if chosen == "bf16" else "the GPU has no bf16"
        elif device.type == "cpu":
            chosen = "bf16" if cpu_has_fast_bf16() else "fp32"
            why = "the CPU has avx512_bf16/AMX" if chosen == "bf16" else "the CPU has no native bf16 (avx512_bf16/AMX)"
        else:
            chosen, why = "fp32", f"no low precision is tuned for {device.type}"
        return chosen, f"precision auto: {chosen} ({why})"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA GPU (its loss scaling runs there only); on {device.type} "
                          "use bf16 (or auto)")
    if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        # asked for, so honoured; but emulated bf16 matmuls ran at under 1 GFLOP/s on an AVX2 EPYC
        return name, "precision bf16: this CPU has no native bf16 (avx512_bf16/AMX), so it runs far slower than fp32"
    return name, ""


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The forward's context: autocast to bf16/fp16 on the model's device type; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ConfigError(f"autocast needs a resolved precision (fp32, bf16, fp16), got '{precision}'")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (small fp16 gradients flush to zero without it); a disabled
    scaler, whose step/update are plain optimizer calls, everywhere else."""
    enabled = precision == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def set_trial_precision(cfg: Config, precision: str | None) -> Config:
    """`--precision` of ablate / tune: every trial's `train.precision`, checked against the
    trials' device now (fp16 on a CPU fails before any trial starts)."""
    if precision is not None:
        from dinokit.runtime.device import resolve_device

        apply_dict(cfg, {"train": {"precision": precision}})
        resolve_precision(precision, resolve_device(cfg.train.device))
    return cfg
