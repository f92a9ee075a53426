"""Linear layers packed for oneDNN give the plain layers' outputs, and only plain CPU linears
are swapped (ragraph_serving.packed, which the LLM's weights use)."""

from __future__ import annotations

import copy

import torch
from ragraph_serving.packed import PackedLinear, pack_linears
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


@torch.inference_mode()
def test_a_packed_llama_gives_the_plain_logits() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
    )
    plain = LlamaForCausalLM(config).eval()
    packed = copy.deepcopy(plain)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert pack_linears(packed) == linears == 2 * 7 + 1
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    ids = torch.randint(0, 101, (3, 9))
    assert torch.allclose(packed(ids).logits, plain(ids).logits, atol=1e-5)


@torch.inference_mode()
def test_bfloat16_layers_are_packed_within_their_precision() -> None:
    torch.manual_seed(1)
    layer = torch.nn.Linear(64, 48).to(torch.bfloat16)
    packed = PackedLinear(layer, batch_hint=4)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    expected = torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
    assert torch.allclose(packed(x).float(), expected, atol=0.05 * float(expected.abs().max()))


def test_gpt2_keeps_its_conv1d_layers_and_packs_its_head() -> None:
    torch.manual_seed(2)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    with torch.inference_mode():
        ids = torch.randint(0, 50, (1, 7))
        before = model(ids).logits
        assert pack_linears(model) == 1  # lm_head; attention and MLP are transformers' Conv1D
        assert isinstance(model.lm_head, PackedLinear)
        assert torch.allclose(model(ids).logits, before, atol=1e-5)
