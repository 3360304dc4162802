"""`precision: auto` for training follows a table of measured wins (infer/precision.py), by the
kind of bf16 the hardware has; evaluation and prediction keep the hardware-only rule."""

from __future__ import annotations

import torch

from dinokit.infer import precision as precision_mod
from dinokit.infer.precision import BF16_TRAINING_WINS, auto_training_precision, bf16_kind, resolve_precision

CPU = torch.device("cpu")


def test_bf16_kind_names_what_the_hardware_has(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_capability", lambda: "AVX512")
    for flags, kind in (({"avx2"}, "cpu-none"), ({"avx512_bf16"}, "cpu-avx512_bf16"),
                        ({"avx512_bf16", "amx_bf16"}, "cpu-amx")):
        monkeypatch.setattr(precision_mod, "cpu_flags", lambda flags=flags: flags)
        assert bf16_kind(CPU) == kind
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert bf16_kind(torch.device("cuda", 0)) == "cuda-none"
    assert bf16_kind(torch.device("mps")) == "mps-none"


def test_training_auto_is_bf16_only_where_the_table_says_it_won():
    wins = frozenset({"cpu-amx"})
    assert auto_training_precision("cpu-amx", wins)[0] == "bf16"
    chosen, why = auto_training_precision("cpu-avx512_bf16", wins)
    assert chosen == "fp32" and why == "bf16 training not measured faster on cpu-avx512_bf16"
    assert auto_training_precision("cpu-none", frozenset())[1] == "no native bf16 (cpu-none)"
    assert auto_training_precision("cuda-bf16", frozenset())[0] == "fp32"
    # until the lead's measurement edits it, the table keeps what auto did before the rule
    assert BF16_TRAINING_WINS == {"cuda-bf16", "cpu-amx", "cpu-avx512_bf16"}


def test_resolve_precision_uses_the_table_for_training_only(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(precision_mod, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision_mod.auto_training_precision, "__defaults__", (frozenset({"cpu-amx"}),))
    assert resolve_precision("auto", CPU, training=True) == (
        "fp32", "precision auto: fp32 (bf16 training not measured faster on cpu-avx512_bf16)")
    assert resolve_precision("auto", CPU)[0] == "bf16"  # inference: the hardware rule
    assert resolve_precision("bf16", CPU, training=True) == ("bf16", "")  # asked for: kept
