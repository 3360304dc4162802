"""model.checkpoint_ffn: the encoder FFN's hidden layer is recomputed in the backward, not kept;
outputs and gradients stay those of the plain model."""

from __future__ import annotations

import torch

from dinokit.config import ModelConfig
from dinokit.model.encoder import EncoderLayer
from dinokit.model.attention import Shapes


def _layer(checkpoint_ffn: bool, dropout: float = 0.0) -> EncoderLayer:
    cfg = ModelConfig(hidden_dim=32, nheads=2, dim_feedforward=256, enc_points=2, num_feature_levels=2,
                      dropout=dropout, checkpoint_ffn=checkpoint_ffn)
    torch.manual_seed(0)
    return EncoderLayer(cfg).train()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Shapes, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes: Shapes = [(6, 8), (3, 4)]
    S = sum(h * w for h, w in shapes)
    src = torch.randn(2, S, 32, generator=g, requires_grad=True)
    pos = torch.randn(2, S, 32, generator=g)
    refs = torch.rand(2, S, 2, 2, generator=g)
    return src, pos, refs, shapes, torch.zeros(2, S, dtype=torch.bool)


def _run(layer: EncoderLayer, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
    """(output, src grad, parameter grads, bytes autograd saved for the backward)."""
    src, pos, refs, shapes, mask = _inputs()
    saved = []
    torch.manual_seed(seed)  # dropout's draws
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        out = layer(src, pos, refs, shapes, mask)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), src.grad, grads, sum(saved)


def test_checkpointed_ffn_equals_plain_and_keeps_less():
    plain_out, plain_src, plain_grads, plain_bytes = _run(_layer(False))
    ckpt_out, ckpt_src, ckpt_grads, ckpt_bytes = _run(_layer(True))
    torch.testing.assert_close(ckpt_out, plain_out, rtol=0, atol=0)
    torch.testing.assert_close(ckpt_src, plain_src, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)
    hidden = 2 * 60 * 256 * 4  # one (2, S, dim_feedforward) float tensor
    assert plain_bytes - ckpt_bytes >= hidden  # the hidden layer is no longer kept


def test_checkpoint_replays_dropout():
    """With dropout on, the recomputed hidden layer must draw the same mask as the forward did."""
    _, plain_src, plain_grads, _ = _run(_layer(False, dropout=0.3))
    _, ckpt_src, ckpt_grads, _ = _run(_layer(True, dropout=0.3))
    torch.testing.assert_close(ckpt_src, plain_src, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ckpt_grads["linear1.weight"], plain_grads["linear1.weight"], rtol=1e-6, atol=1e-6)


def test_no_checkpoint_without_autograd():
    layer = _layer(True).eval()
    src, pos, refs, shapes, mask = _inputs()
    with torch.no_grad():
        out = layer(src.detach(), pos, refs, shapes, mask)
    assert out.shape == src.shape and not out.requires_grad
