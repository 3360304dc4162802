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


# Hardware kinds (bf16_kind) on which `precision: auto` trains in bf16. A kind belongs here when
# the training step measured faster in bf16 than in fp32 at equal accuracy
# (benchmarks/speed.py --compile-matrix for the speed, benchmarks/precision_ap.py for the AP).
# Today's entries keep the behaviour `auto` had before the rule (every native-bf16 kind), pending
# that measurement: the lead's quiet-machine run removes the kinds where bf16 does not pay.
BF16_TRAINING_WINS: frozenset[str] = frozenset({"cuda-bf16", "cpu-amx", "cpu-avx512_bf16"})


def bf16_kind(device: torch.device) -> str:
    """What bf16 arithmetic `device` has: cuda-bf16 | cuda-none | cpu-amx | cpu-avx512_bf16 |
    cpu-none | <type>-none."""
    if device.type == "cuda":
        return "cuda-bf16" if torch.cuda.is_bf16_supported() else "cuda-none"
    if device.type != "cpu":
        return f"{device.type}-none"
    flags = cpu_flags()
    if "amx_bf16" in flags or "AMX" in cpu_capability().upper():
        return "cpu-amx"
    return "cpu-avx512_bf16" if "avx512_bf16" in flags else "cpu-none"


def auto_training_precision(kind: str, wins: frozenset[str] = BF16_TRAINING_WINS) -> tuple[str, str]:
    """`precision: auto` for training on a bf16_kind: (bf16 | fp32, why)."""
    if kind in wins:
        return "bf16", f"bf16 training measured to pay on {kind}"
    if kind.endswith("-none"):
        return "fp32", f"no native bf16 ({kind})"
    return "fp32", f"bf16 training not measured faster on {kind}"


def resolve_precision(name: str, device: torch.device, training: bool = False) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, a one-line note saying what `auto` chose and why; "" otherwise).
    `training`: auto follows the measured table (auto_training_precision), not the hardware alone.

    Raises ConfigError for an unknown name and for fp16 anywhere but CUDA: `grad_scaler` has a
    GradScaler only there, and fp16 training without one underflows its gradients."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    if name == "auto" and training:
        chosen, why = auto_training_precision(bf16_kind(device))
        return chosen, f"precision auto: {chosen} ({why})"
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
