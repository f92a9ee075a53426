"""The real encoder with its linear layers packed for oneDNN gives the embeddings of the plain one."""

from __future__ import annotations

import numpy as np
import torch
from ragraph_encoder.model import Encoder
from ragraph_encoder.settings import EncoderSettings
from ragraph_serving.packed import PackedLinear

TEXTS = ["Did Johannes Gutenberg invent the printing press?", "Pencils are made of graphite.", "ok"]


def test_packed_encoder_matches_the_plain_one() -> None:
    packed = Encoder(EncoderSettings(device="cpu"))
    plain = Encoder(EncoderSettings(device="cpu", packed_weights=False))
    assert any(isinstance(m, PackedLinear) for m in packed.model.modules())
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in packed.model.modules())
    a, b = np.stack(packed.encode_sync(TEXTS)), np.stack(plain.encode_sync(TEXTS))
    assert a.shape == b.shape == (3, 384)
    assert np.allclose(a, b, atol=1e-5)
