"""Device strings -> torch.device, with CUDA availability faked on a CPU machine."""

from __future__ import annotations

import pytest
import torch

from dinokit.runtime.device import resolve_device
from dinokit.errors import DinokitError


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")


def test_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_cuda_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DinokitError, match="CUDA is not available"):
            resolve_device(spec)


def test_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(DinokitError, match="only 2 CUDA"):
        resolve_device("cuda:2")
    with pytest.raises(DinokitError, match="bad device"):
        resolve_device("cuda:x")


def test_mps_and_unknown(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DinokitError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(DinokitError, match="unknown device 'tpu'"):
        resolve_device("tpu")
