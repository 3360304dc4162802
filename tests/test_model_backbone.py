"""Backbones: the strides asked for, frozen vs trainable normalisation, local weight files."""

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from dinokit.config import ConfigError, ModelConfig
from dinokit.errors import CheckpointError
from dinokit.model.backbone import Backbone
from dinokit.model.dino import build_model
from tests.model_helpers import micro_config


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "swin_t"])
def test_backbones_return_strides_8_16_32(name):
    backbone = Backbone(ModelConfig(backbone=name), levels=3).eval()
    with torch.no_grad():
        maps = backbone(torch.rand(1, 3, 128, 192))
    assert [m.shape[-2:] for m in maps] == [(16, 24), (8, 12), (4, 6)]
    assert [m.shape[1] for m in maps] == backbone.num_channels


def test_four_and_five_levels_add_extra_stride_64_and_stride_4():
    for levels, sizes in [(4, [(16, 16), (8, 8), (4, 4), (2, 2)]), (5, [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)])]:
        model = build_model(micro_config(num_feature_levels=levels)).eval()
        srcs, masks = model.multiscale(torch.rand(1, 3, 128, 128), torch.zeros(1, 128, 128, dtype=torch.bool))
        assert [tuple(s.shape[-2:]) for s in srcs] == sizes
        assert isinstance(model.input_proj[-1][0], torch.nn.Conv2d) and model.input_proj[-1][0].stride == (2, 2)


def test_from_scratch_keeps_batchnorm_trainable():
    backbone = Backbone(ModelConfig(backbone="resnet18"), levels=3)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    assert all(p.requires_grad for p in backbone.parameters())


def test_pretrained_weights_from_a_local_file_freeze_bn_and_stem(tmp_path):
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.bn1.running_mean.uniform_(-1, 1)
        reference.layer3[0].conv1.weight.mul_(3.0)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = Backbone(ModelConfig(backbone="resnet18", weights=str(path)), levels=3)
    body = backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d) and torch.equal(body.bn1.running_mean, reference.bn1.running_mean)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not body.conv1.weight.requires_grad and not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    reference.eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        # FrozenBatchNorm2d folds the statistics into one scale and shift: equal up to float rounding
        assert torch.allclose(backbone(x)[-1], expected, rtol=1e-4, atol=1e-4)


def test_bad_backbone_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone"):
        Backbone(ModelConfig(backbone="resnet9000"), levels=3)
    with pytest.raises(CheckpointError, match="not found"):
        Backbone(ModelConfig(backbone="resnet18", weights=str(tmp_path / "missing.pth")), levels=3)
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        Backbone(ModelConfig(backbone="resnet18", weights=str(wrong)), levels=3)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        Backbone(ModelConfig(backbone="resnet18", weights=str(corrupt)), levels=3)
