"""CPU speed options that change how the model runs, never what it computes in fp32.

- `dinokit.runtime.allocator.tune_allocator` (applied by the CLI) keeps freed memory for reuse.
- `compile_model`: torch.compile, opt-in (`--compile`): the first call compiles for minutes.
- `quantize_dynamic_int8`: dynamic int8 quantisation of the linear layers for CPU inference,
  opt-in (`--quantize int8`) because it changes the outputs (its AP change is in the benchmark).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dinokit.config import ConfigError

QUANTIZE_CHOICES = ("none", "int8")


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """int8 weights, activations quantised on the fly, for every nn.Linear (CPU inference only).

    Convolutions (the backbone) stay fp32: dynamic quantisation covers linear layers, which are
    most of the transformer's compute.
    """
    from torch.ao.quantization import quantize_dynamic

    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("--quantize int8 runs on the CPU only (use --device cpu)")
    model.eval()
    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)


def int8_device(spec: str | None) -> torch.device:
    """The device an int8-quantised model runs on: the CPU. `auto` resolves to it even on a CUDA
    machine (nothing is moved to the GPU first); an explicit accelerator is a one-line error."""
    from dinokit.runtime.device import resolve_device

    if (spec or "auto").strip().lower() == "auto":
        return torch.device("cpu")
    device = resolve_device(spec)
    if device.type != "cpu":
        raise ConfigError(f"--quantize int8 runs on the CPU only, not on '{spec}' (use --device cpu or auto)")
    return device


def check_quantize(value: str | None) -> str:
    value = (value or "none").lower()
    if value not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got '{value}'")
    return value


def prepare_for_inference(model: nn.Module, quantize: str = "none", compile: bool = False) -> nn.Module:
    """The eval-mode model as predict and eval run it: optionally int8-quantised, then compiled."""
    model.eval()
    if check_quantize(quantize) == "int8":
        model = quantize_dynamic_int8(model)
    return compile_model(model) if compile else model


def compile_model(model: nn.Module, **options: Any) -> nn.Module:
    """torch.compile of the inference model (a new image size recompiles once, then sizes are
    dynamic). The training step compiles in dinokit/training/compiled.py."""
    return torch.compile(model, **options)  # type: ignore[return-value]
