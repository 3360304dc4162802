"""No per-image or per-loss-term host synchronisation in a training step.

There is no GPU here, so what would make a CUDA step wait is counted on the CPU: every read of
a tensor's value by the host (`aten._local_scalar_dense`: `.item()`, `float(t)`, `int(t)`,
`bool(t)`) and every op whose result's size depends on the data (`nonzero`, `x[mask]`) through a
dispatch mode, and every `Tensor.cpu` / `.tolist` / `.numpy` call. On a
CUDA device each of these waits for the queued kernels; reading an optimizer's step counter
(kept on the CPU by torch) does not, so those reads are left out.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch.utils._python_dispatch import TorchDispatchMode

from dinokit.loss import build_criterion
from dinokit.loss.matcher import HungarianMatcher
from dinokit.model.dino import build_model
from dinokit.training import losslog
from tests.model_helpers import make_targets, micro_config


_SIZED_BY_DATA = {torch.ops.aten.nonzero, torch.ops.aten.masked_select, torch.ops.aten._unique2, torch.ops.aten.unique_dim}
_INDEXING = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_, torch.ops.aten._index_put_impl_}


def _bool_index(args) -> bool:
    return any(t is not None and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else []))


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values while active; `scalars` keeps the tensors read."""

    def __init__(self, monkeypatch) -> None:
        super().__init__()
        self.scalars: list[torch.Tensor] = []
        self.sized_by_data: list[str] = []  # ops whose output size needs the data: nonzero, x[mask], ...
        self.calls = {"cpu": 0, "tolist": 0, "numpy": 0}
        self.active = False
        for name in self.calls:
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, real))

    def _counted(self, name, real):
        def wrapper(tensor, *args, **kwargs):
            if self.active:
                self.calls[name] += 1
            return real(tensor, *args, **kwargs)

        return wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.scalars.append(args[0])
        elif func.overloadpacket in _SIZED_BY_DATA or (func.overloadpacket in _INDEXING and _bool_index(args)):
            self.sized_by_data.append(str(func))  # the host waits for the result's size
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self.active = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.active = False
        return super().__exit__(*exc)


def _matcher() -> HungarianMatcher:
    return HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0)


def test_matcher_moves_all_images_costs_to_the_host_in_one_transfer(monkeypatch):
    g = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(4, 30, 5, generator=g), torch.rand(4, 30, 4, generator=g) * 0.5 + 0.25
    targets = make_targets([3, 0, 7, 1], seed=1)
    reads = HostReads(monkeypatch)
    with reads:
        got = _matcher()(logits, boxes, targets)
    assert reads.calls["cpu"] == 1 and reads.calls["tolist"] == 0 and reads.scalars == []
    assert reads.calls["numpy"] <= 1  # of the host copy
    for b, (t, (rows, cols)) in enumerate(zip(targets, got)):  # the same assignment as image by image
        if len(t["labels"]) == 0:
            assert rows.numel() == cols.numel() == 0
            continue
        cost = torch.nan_to_num(_matcher().image_cost(logits[b], boxes[b], t), nan=1e8, posinf=1e8, neginf=-1e8)
        ref_rows, ref_cols = linear_sum_assignment(cost.numpy())
        assert rows.tolist() == ref_rows.tolist() and cols.tolist() == ref_cols.tolist()
        assert rows.dtype == cols.dtype == torch.long and len(rows) == len(t["labels"])


def test_criterion_reads_only_the_matchers_costs_on_the_host(monkeypatch):
    """Last layer, auxiliary layers, encoder proposals and denoising: one transfer per matcher
    call, no other read (the box count and the kept denoising draw stay on the device)."""
    cfg = micro_config()
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).train()
    targets = make_targets([3, 0, 5, 2], seed=2)
    outputs = model(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)), None, targets)
    assert outputs.get("dn") is not None and outputs.get("enc_outputs") is not None
    criterion = build_criterion(cfg)
    matcher_calls = []
    real = criterion.matcher.assign  # the host step of every matching
    monkeypatch.setattr(criterion.matcher, "assign", lambda *a: matcher_calls.append(1) or real(*a))
    reads = HostReads(monkeypatch)
    with reads:
        losses = criterion(outputs, targets)
    assert len(matcher_calls) == cfg.dec_layers + 1  # every decoder layer and the encoder proposals
    assert reads.calls["cpu"] == len(matcher_calls)
    assert reads.scalars == [] and reads.calls["tolist"] == 0
    assert reads.sized_by_data == []  # the denoising slots are a mask, not indices
    losses["loss"].backward()  # still one graph
    assert torch.isfinite(losses["loss"]) and losses["dn_draw"].dtype == torch.long


def test_loss_log_gives_the_values_float_gives_in_one_read(monkeypatch):
    g = torch.Generator().manual_seed(0)
    steps = []
    for i in range(5):
        terms = {"loss": torch.rand((), generator=g) * 30, "loss_class": torch.randn(1, generator=g)[0],
                 "dn_draw": torch.tensor(i % 2), "per_image": torch.rand(3, generator=g)}
        if i == 3:
            terms["loss"] = torch.tensor(float("nan"))
            terms["loss_extra"] = torch.tensor(1 / 3)
        steps.append(terms)
    log = losslog.LossLog()
    for i, terms in enumerate(steps):
        log.push(i + 1, 0, 0.1 * i, terms)
    reads = HostReads(monkeypatch)
    with reads:
        rows = log.drain()
    assert reads.calls["cpu"] == 1 and reads.calls["tolist"] == 1 and reads.scalars == []
    assert len(log) == 0 and log.drain() == []
    for i, (row, terms) in enumerate(zip(rows, steps)):
        expected = {k: float(v) for k, v in terms.items() if v.numel() == 1}
        assert (row.step, row.lr) == (i + 1, 0.1 * i)
        assert list(row.values) == list(expected)
        for k, v in expected.items():  # exact: the same Python float
            assert (row.values[k] == v) or (v != v and row.values[k] != row.values[k]), k
    sums, curve = {}, []
    assert losslog.fold(rows, sums, curve, curve_every=2) == 4  # the NaN step is left out of the means
    assert sums["loss"] == sum(float(s["loss"]) for j, s in enumerate(steps) if j != 3)
    assert [p[0] for p in curve] == [1, 2, 4]


def test_giou_loss_equals_torchvisions_in_value_and_gradient():
    from torchvision.ops import generalized_box_iou_loss

    from dinokit.loss.criterion import giou_loss_sum

    g = torch.Generator().manual_seed(4)
    xy = torch.rand(64, 2, generator=g)
    a = torch.cat((xy, xy + 0.05 + torch.rand(64, 2, generator=g) * 0.4), -1)
    b = a + torch.randn(64, 4, generator=g) * 0.15  # overlapping, disjoint and inverted pairs
    b[0] = torch.tensor([a[0, 2], a[0, 1], a[0, 2] + 0.1, a[0, 3]])  # touching: empty intersection
    results = []
    for loss_fn in (lambda p, t: generalized_box_iou_loss(p, t, reduction="sum"), giou_loss_sum):
        pred, target = a.clone().requires_grad_(), b.clone().requires_grad_()
        loss = loss_fn(pred, target)
        results.append((loss.detach(), *torch.autograd.grad(loss, (pred, target))))
    for ref, got in zip(*results):
        assert torch.equal(ref, got)
    assert (results[0][1] != 0).any()


def test_training_reads_the_losses_once_per_interval_and_logs_the_same_values(tmp_path, monkeypatch):
    """4 steps, 2 per epoch, losses read every 3 steps: step 1 and 3 read them inside the step,
    the evaluations after steps 2 and 4 read the rest. Every logged number (metrics.csv means,
    TensorBoard scalars, the loss curve) is exactly what `float(term)` gave after that step."""
    from dinokit.interop.load import load_checkpoint
    from dinokit.loss.criterion import SetCriterion
    from dinokit.training import trainer as trainer_mod
    from dinokit.training.board import Board
    from dinokit.training.console import TrainConsole
    from tests.test_train_trainer import fast_config

    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(losslog, "LOG_EVERY", 3)
    monkeypatch.setattr(TrainConsole, "line_due", lambda self, step: False)  # only the interval reads
    written: list[tuple[str, float, int]] = []

    class Writer:
        def add_scalar(self, name: str, value: float, step: int) -> None:
            written.append((name, value, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr("dinokit.training.board.open_board", lambda run_dir, enabled: Board(Writer()))  # via loggers
    terms: list[dict[str, torch.Tensor]] = []
    real_forward = SetCriterion.forward

    def recording(self, outputs, targets):
        out = real_forward(self, outputs, targets)
        terms.append({k: v.detach().clone() for k, v in out.items() if v.numel() == 1})  # read after the step
        return out

    monkeypatch.setattr(SetCriterion, "forward", recording)
    reads, per_step = HostReads(monkeypatch), []
    real_step = trainer_mod.Trainer._train_step

    def counted_step(self, *args):
        scalars, calls, sized = len(reads.scalars), dict(reads.calls), len(reads.sized_by_data)
        with reads:
            real_step(self, *args)
        counters = {id(s["step"]) for s in self.optimizer.state.values() if "step" in s}  # CPU tensors in torch
        per_step.append({
            "scalars": [t for t in reads.scalars[scalars:] if id(t) not in counters],
            "sized": reads.sized_by_data[sized:],
            **{k: reads.calls[k] - calls[k] for k in calls},
        })

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", counted_step)
    cfg = fast_config(tmp_path, "train.steps=4", "train.name=syncs")
    result = trainer_mod.train(cfg, progress=False)
    assert [s["tolist"] for s in per_step] == [1, 0, 1, 0]  # the loss terms: once per interval
    for s in per_step:  # what is left is per step, none per image or term: the finite-gradient
        # check (a bool); the decoder's mask layout comes from the query layout, not a read
        assert [t.dtype for t in s["scalars"]] == [torch.bool]
        assert s["sized"] == []
    matcher_calls = cfg.model.dec_layers + 1  # one host copy each: every decoder layer, the encoder
    assert [s["cpu"] for s in per_step] == [matcher_calls + 1, matcher_calls, matcher_calls + 1, matcher_calls]
    values = [{k: float(v) for k, v in t.items()} for t in terms]
    assert len(values) == 4
    for row, steps in zip(result.history, (values[:2], values[2:])):
        for k in steps[0]:
            total = 0.0
            for v in steps:
                total += v[k]
            assert row[k] == (0.0 + total) / len(steps), k
    expected = [(f"train/{k}", v, i + 1) for i, step in enumerate(values) for k, v in step.items()]
    assert [w for w in written if w[0].startswith("train/") and w[0] != "train/lr"] == expected
    ckpt = load_checkpoint(result.run_dir / "last.pt")
    assert ckpt["loss_curve"] == [[i + 1, v["loss"]] for i, v in enumerate(values)]


class HostMade(TorchDispatchMode):
    """Counts tensors built from host data (`torch.tensor`, `torch.as_tensor` of Python values:
    `aten.lift_fresh`). On CUDA each one that the model uses is a host-to-device copy, which waits
    for the queued kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.lift_fresh, torch.ops.aten.lift_fresh_copy):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_level_shapes_reach_the_device_once_per_forward():
    """The deformable attention's (H, W) table is built once per forward, not per encoder layer,
    decoder layer or sampling block: the host-made tensors do not grow with the layer count."""
    counts = {}
    for layers in (1, 3):
        cfg = micro_config(enc_layers=layers, dec_layers=layers)
        torch.manual_seed(0)
        model = build_model(cfg, load_weights=False).train()
        images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        made = HostMade()
        with made:
            model(images, None, make_targets([2, 1], seed=2))
        counts[layers] = made.count
    assert counts[1] == counts[3], counts  # before: 2 L more per encoder and decoder layer, 1 per sampling block
