"""Where a training step's FLOPs go, by model part, forward and backward: dinokit against HF.

    python benchmarks/flops_by_part.py [--case r50-train-2x320] [--no-peer] [--set model.x=y ...]
                                       [--smoke] [--json FILE]

Counts one training step (forward, loss, backward) of a benchmarks/speed.py case on the eager
fp32 model, as speed.py's GFLOP column does (torch's FlopCounterMode formulas: matmuls and
convolutions), but attributes every counted operation to the innermost module that ran it:

- forward operations through forward pre/post hooks on every module;
- backward operations through the autograd node that runs them: each module's forward records
  the range of autograd sequence numbers it created, and a backward node belongs to the
  innermost module whose range holds its sequence number. (FlopCounterMode's own module tracker
  leaves modules open during the backward and counts their gradients in every enclosing module.)

The modules are then grouped into parts that both implementations have (backbone, encoder, the
decoder's self-attention, cross-attention, FFN, query positions, heads, ...). The scaled-dot-product
attention kernel a CPU runs (`_scaled_dot_product_flash_attention_for_cpu`) has no formula in
torch; it is counted here with torch's SDPA formula and shown as its own column, so the totals
without it equal speed.py's. FLOP counts are deterministic: no quiet machine needed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (benchmarks/speed.py: cases, batches, models)

aten = torch.ops.aten
CPU_SDPA = {aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward}

# (part, regex on "model.<module name>" / "criterion.<...>"), first match wins; shared part names
DINOKIT_PARTS: list[tuple[str, str]] = [
    ("backbone", r"model\.backbone\."),
    ("input projections", r"model\.input_proj\."),
    ("encoder FFN", r"model\.encoder\.layers\.\d+\.linear[12]$"),
    ("encoder deformable attention", r"model\.encoder\."),
    ("two-stage proposals (heads on encoder tokens)", r"model\.queries\."),
    ("denoising queries (embedding)", r"model\.denoising\."),
    ("decoder self-attention", r"model\.decoder\.layers\.\d+(\.self_attn.*)?$"),
    ("decoder cross-attention", r"model\.decoder\.layers\.\d+\.cross_attn"),
    ("decoder FFN", r"model\.decoder\.layers\.\d+\.linear[12]$"),
    ("decoder query positions (ref_point_head)", r"model\.decoder\.ref_point_head"),
    ("decoder box head (prediction + refinement)", r"model\.decoder\.box_head"),
    ("decoder class head", r"model\.decoder\.class_head"),
    ("loss and matcher", r"criterion"),
]
HF_PARTS: list[tuple[str, str]] = [
    ("backbone", r"model\.model\.backbone\."),
    ("input projections", r"model\.model\.input_proj\."),
    ("encoder FFN", r"model\.model\.encoder\.layers\.\d+\.mlp"),
    ("encoder deformable attention", r"model\.model\.encoder\."),
    ("two-stage proposals (heads on encoder tokens)",
     r"model\.model\.(enc_output|pos_trans|decoder\.(class_embed|bbox_embed)\.6\b)"),
    ("decoder self-attention", r"model\.model\.decoder\.layers\.\d+\.self_attn"),
    ("decoder cross-attention", r"model\.model\.decoder\.layers\.\d+\.encoder_attn"),
    ("decoder FFN", r"model\.model\.decoder\.layers\.\d+\.mlp"),
    ("decoder box head (prediction + refinement)", r"model\.(model\.decoder\.)?bbox_embed"),
    ("decoder class head", r"model\.(model\.decoder\.)?class_embed"),
    ("loss and matcher", r"model$"),  # HF builds its loss and matcher inside the model's forward
]


class PartFlops(FlopCounterMode):
    """FlopCounterMode whose counts go to the innermost module, forward and backward alike."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__(display=False)
        self.flop_registry = {**self.flop_registry, **{op: _cpu_sdpa_flops(op) for op in CPU_SDPA}}
        self.stack = ["(outside any module)"]
        self.ranges: list[tuple[int, int, str]] = []  # (first, last) autograd sequence numbers of a call
        self.started: dict[str, list[int]] = defaultdict(list)
        self.counts: dict[tuple[str, str, str], float] = defaultdict(float)  # (module, fwd|bwd, op) -> FLOP
        self.handles = []
        for prefix, root in modules.items():
            for name, module in root.named_modules():
                full = f"{prefix}.{name}" if name else prefix
                self.handles.append(module.register_forward_pre_hook(self._enter(full)))
                self.handles.append(module.register_forward_hook(self._leave(full)))

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()

    @staticmethod
    def _sequence_number() -> int:
        """The autograd sequence counter now: the next node created gets a larger number."""
        with torch.enable_grad():
            return (torch.zeros((), requires_grad=True) * 1.0).grad_fn._sequence_nr()

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self.stack.append(name)
            self.started[name].append(self._sequence_number())
        return hook

    def _leave(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            self.stack.pop()
            self.ranges.append((self.started[name].pop(), self._sequence_number(), name))
        return hook

    def _owner(self, sequence_number: int) -> str:
        inside = [(last - first, name) for first, last, name in self.ranges if first < sequence_number < last]
        return min(inside)[1] if inside else "(outside any module)"

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if func_packet in self.flop_registry:
            flop = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            node = torch._C._current_autograd_node()
            op = "sdpa" if func_packet in CPU_SDPA else str(func_packet).split(".")[-1]
            if node is None:
                self.counts[(self.stack[-1], "fwd", op)] += flop
            else:
                self.counts[(self._owner(node._sequence_nr()), "bwd", op)] += flop
        return out


def _cpu_sdpa_flops(packet: Any) -> Callable[..., int]:
    """torch's SDPA formulas on the CPU kernel's arguments (shapes of q, k, v; grad_out first)."""
    backward = "backward" in str(packet)

    def count(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        if backward:
            grad_out, q, k, v = args[:4]
            return sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape)
        q, k, v = args[:3]
        return sdpa_flop_count(q.shape, k.shape, v.shape)

    return count


def count_step(impl: str, case_name: str, sets: list[str], smoke: bool) -> dict[tuple[str, str, str], float]:
    """Per (module, direction, op) FLOPs of one training step of the case."""
    torch.manual_seed(0)
    case = speed.case_for(case_name, smoke)
    if impl == "hf":
        import peers

        model, criterion, num_classes, _ = speed.build("hf", case)
        images, masks, targets = speed.random_batch(case, num_classes)
        step = peers.make_step(model, images, masks, targets, True, no_grad=False)
        modules: dict[str, nn.Module] = {"model": model}
    else:
        from dinokit.config import apply_overrides, load_preset
        from dinokit.loss.criterion import build_criterion
        from dinokit.model.dino import build_model

        cfg = apply_overrides(load_preset(case.preset), sets)
        model, criterion = build_model(cfg.model, load_weights=False), build_criterion(cfg.model, cfg.loss)
        images, masks, targets = speed.random_batch(case, cfg.model.num_classes)
        step = speed.dinokit_step(model, criterion, images, masks, targets, True, no_grad=False)
        modules = {"model": model, "criterion": criterion}
    counter = PartFlops(modules)
    try:
        with counter:
            step()
    finally:
        counter.remove_hooks()
    return dict(counter.counts)


def by_part(counts: dict[tuple[str, str, str], float], rules: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """GFLOP per part: fwd, bwd (SDPA kernels apart as sdpa_fwd / sdpa_bwd)."""
    parts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (module, direction, op), flop in counts.items():
        part = next((p for p, rx in rules if re.match(rx, module)), "other: " + module)
        parts[part][f"sdpa_{direction}" if op == "sdpa" else direction] += flop / 1e9
    return {p: dict(v) for p, v in parts.items()}


def render(results: dict[str, dict[str, dict[str, float]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    order = [p for p, _ in DINOKIT_PARTS] + [p for p, _ in HF_PARTS]
    names = list(dict.fromkeys(order + sorted({p for r in results.values() for p in r})))
    table = Table(title="GFLOP of one training step, by part (fwd + bwd; SDPA apart)")
    table.add_column("part")
    for impl in results:
        for col in ("fwd", "bwd", "total", "+SDPA"):
            table.add_column(f"{impl} {col}", justify="right")
    totals = {impl: defaultdict(float) for impl in results}
    for part in names:
        cells = []
        if not any(part in r for r in results.values()):
            continue
        for impl, parts in results.items():
            v = parts.get(part, {})
            fwd, bwd, sdpa = v.get("fwd", 0.0), v.get("bwd", 0.0), v.get("sdpa_fwd", 0.0) + v.get("sdpa_bwd", 0.0)
            for key, value in (("fwd", fwd), ("bwd", bwd), ("sdpa", sdpa)):
                totals[impl][key] += value
            cells += [f"{fwd:.2f}", f"{bwd:.2f}", f"{fwd + bwd:.2f}", f"{sdpa:.2f}" if sdpa else ""]
        table.add_row(part, *cells)
    row = []
    for impl in results:
        t = totals[impl]
        row += [f"{t['fwd']:.1f}", f"{t['bwd']:.1f}", f"{t['fwd'] + t['bwd']:.1f}", f"{t['sdpa']:.1f}"]
    table.add_row("total", *row, style="bold")
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    train_cases = [n for n, c in speed.CASES.items() if c.train]
    parser.add_argument("--case", choices=train_cases, default="r50-train-2x320")
    parser.add_argument("--no-peer", action="store_true", help="dinokit only (no transformers needed)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="dinokit config override")
    parser.add_argument("--smoke", action="store_true", help="speed.py's small shapes: a check, not a count")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    impls = ["dinokit"] + ([] if args.no_peer or not speed.CASES[args.case].peer else ["hf"])
    if "hf" in impls:
        import peers

        if not peers.available():
            raise SystemExit(peers.INSTALL_HINT)
    results = {}
    for impl in impls:
        rules = HF_PARTS if impl == "hf" else DINOKIT_PARTS
        results[impl] = by_part(count_step(impl, args.case, args.sets if impl == "dinokit" else [], args.smoke), rules)
    render(results)
    if args.json:
        from dinokit.files import write_json

        write_json(Path(args.json), {"argv": sys.argv[1:], "torch": torch.__version__, "case": args.case,
                                     "sets": args.sets, "gflop_by_part": results})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
