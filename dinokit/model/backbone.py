"""torchvision backbones as a list of multi-scale feature maps.

With pretrained weights (the paper's setting) every BatchNorm becomes FrozenBatchNorm2d and the
stem and first stage are frozen. From scratch (the CPU default: no weights can be downloaded)
BatchNorm stays trainable and every stage trains: a frozen BatchNorm at its initial statistics is
the identity and would leave a deep network with no normalisation at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from dinokit.checkpoint import names_torch_file
from dinokit.config import ConfigError, ModelConfig
from dinokit.errors import CheckpointError

_RESNET_STAGES = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
_HEADS = ("fc", "avgpool", "classifier", "head", "norm", "permute", "flatten")


def _stage_names(net: nn.Module) -> list[str]:
    """The modules to run in order to reach the deepest feature map, by model family."""
    if all(hasattr(net, n) for n in ("conv1", "layer4")):
        return list(_RESNET_STAGES)
    if isinstance(getattr(net, "features", None), nn.Sequential):
        return [f"features.{i}" for i in range(len(net.features))]
    raise ConfigError(
        f"backbone '{type(net).__name__}' is not supported: use a ResNet-style model or one with "
        "a `features` sequence (mobilenet, efficientnet, convnext, swin, ...)"
    )


def _frozen_prefixes(stages: list[str], picked: list[int]) -> list[str]:
    """Stem and first stage: everything before the second-finest picked stride-4 stage's successor."""
    if stages[0] == "conv1":
        return ["conv1", "bn1", "layer1"]
    # `features` families: the modules up to and including the last stride-4 block.
    return stages[: picked[0] + 1] if picked else []


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d holding the same statistics and eps."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _build_torchvision(name: str, weights: str | None, load_weights: bool) -> nn.Module:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"unknown backbone '{name}' (any torchvision classification model, e.g. resnet50)")
    if weights is None or not load_weights or names_torch_file(weights):
        net = torchvision.models.get_model(name, weights=None)
    else:
        try:
            spec = torchvision.models.get_model_weights(name).DEFAULT if weights == "imagenet" else weights
            net = torchvision.models.get_model(name, weights=spec)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"unknown weights '{weights}' for backbone {name}: {exc}") from None
        except OSError as exc:  # no internet, proxy, ...
            raise ConfigError(
                f"could not download weights '{weights}' for {name} ({exc.__class__.__name__}); "
                "pass a local file with --weights PATH or train from scratch with --set model.weights=null"
            ) from None
    if weights is not None and load_weights and names_torch_file(weights):
        _load_weights_file(net, Path(weights))
    return net


def _load_weights_file(net: nn.Module, path: Path) -> None:
    """Load a torchvision state_dict (or {'model': state_dict}) saved to a local file."""
    if not path.is_file():
        raise CheckpointError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise CheckpointError(f"cannot read backbone weights {path}: {exc.__class__.__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"backbone weights {path} do not hold a state_dict")
    head = tuple(f"{h}." for h in _HEADS)
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = net.load_state_dict(body, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"backbone weights {path} do not fit {type(net).__name__}: {str(exc).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"backbone weights {path} do not fit {type(net).__name__}: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
        )


class Backbone(nn.Module):
    """Runs a torchvision classifier's stages and returns the maps at strides 8/16/32 (and 4).

    `levels` is how many backbone maps are wanted (1..4, finest first: strides 4, 8, 16, 32 from
    the end); extra coarser levels are made later by the input projection.
    """

    def __init__(self, cfg: ModelConfig, levels: int, load_weights: bool = True) -> None:
        super().__init__()
        pretrained = cfg.weights is not None
        self.body = _build_torchvision(cfg.backbone, cfg.weights, load_weights)
        self.stages = _stage_names(self.body)
        for head in _HEADS:  # the classifier is never run: drop its parameters
            if hasattr(self.body, head):
                setattr(self.body, head, nn.Identity())
        strides, channels, nhwc = self._probe()
        picked: list[int] = []
        for stride in (4, 8, 16, 32):
            at = [i for i, s in enumerate(strides) if s == stride]
            if at:
                picked.append(at[-1])
        if len(picked) < levels:
            raise ConfigError(f"backbone {cfg.backbone} gives {len(picked)} feature levels, {levels} asked")
        self.picked = picked[-levels:]
        self.num_channels = [channels[i] for i in self.picked]
        self.nhwc = nhwc
        if not nhwc:
            self.body.to(memory_format=torch.channels_last)  # 4-D weights in the layout of the inputs
        self.depth = self.picked[-1] + 1
        if pretrained:
            freeze_batchnorm(self.body)
            for prefix in _frozen_prefixes(self.stages, [i for i in picked if strides[i] == 4]):
                for p in self._module(prefix).parameters():
                    p.requires_grad_(False)

    def _module(self, name: str) -> nn.Module:
        return self.body.get_submodule(name)

    @torch.no_grad()
    def _probe(self) -> tuple[list[int], list[int], bool]:
        """Stride and channels after each stage, from one tiny non-square input (eval mode)."""
        was_training = self.body.training
        self.body.eval()
        x = torch.zeros(1, 3, 64, 96)
        strides, channels, nhwc = [], [], False
        for name in self.stages:
            x = self._module(name)(x)
            if x.shape[2] * 3 == x.shape[3] * 2:  # (B, C, H, W): H/W = 64/96 in dims 2, 3
                strides.append(64 // x.shape[2])
                channels.append(x.shape[1])
            else:  # (B, H, W, C) layout (swin)
                nhwc = True
                strides.append(64 // x.shape[1])
                channels.append(x.shape[3])
        self.body.train(was_training)
        return strides, channels, nhwc

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised images -> maps (B, C_l, H_l, W_l), finest first.

        Convolutional bodies run channels_last (oneDNN's native layout on a CPU: no reorder per
        convolution); the maps come out channels_last, which flattens to (B, HW, C) for free."""
        out = []
        x = images if self.nhwc else images.contiguous(memory_format=torch.channels_last)
        for i, name in enumerate(self.stages[: self.depth]):
            x = self._module(name)(x)
            if i in self.picked:
                out.append(x.permute(0, 3, 1, 2).contiguous() if self.nhwc else x)
        return out
