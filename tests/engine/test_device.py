"""Device choice: clear errors for devices this machine does not have."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.engine.device import autocast, check_gpu_count, resolve_device
from sgma_cli.errors import DeviceError


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_missing() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="--gpus 2 asked for, but this machine has 0 GPU"):
        check_gpu_count(2)


def test_unknown_device() -> None:
    with pytest.raises(DeviceError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")


def test_cpu_autocast_stays_fp32_unless_asked() -> None:
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
