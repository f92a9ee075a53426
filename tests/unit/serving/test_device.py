"""ragraph_serving.device.pick_device: the device a node computes on."""

from __future__ import annotations

import grpc
import pytest
import torch
from ragraph_client.errors import FailedPrecondition
from ragraph_serving.device import pick_device


def test_auto_is_cuda_only_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_named_devices_pass_through_and_a_missing_gpu_is_a_failed_precondition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FailedPrecondition, match="device 'cuda:1' was asked for but torch sees no CUDA device") as err:
        pick_device("cuda:1")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
