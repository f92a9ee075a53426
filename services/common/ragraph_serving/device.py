"""Which torch device a service computes on, from its ``device`` setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragraph_client.errors import FailedPrecondition

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU; any other name as torch spells it
    (``cpu``, ``cuda``, ``cuda:1``). A CUDA device that torch does not see is refused."""
    import torch  # here, not at import: a process may import this package without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FailedPrecondition(f"device '{name}' was asked for but torch sees no CUDA device")
    return torch.device(name)
