"""Mixed steps: one forward pass that decodes every running sequence and prefills newcomers.

transformers' forward wants a rectangular batch (every row the same number of new tokens), so a
plain engine alternates steps: prefill the newcomers, then decode the running rows. Every prefill
step then stalls the running streams and reads all the weights once more for a handful of rows
(measured in docs/benchmarks.md: with 16 rows of the bench model, a decode step costs ~16 ms and
a one-row prefill of 31 tokens ~22 ms; one pass doing both costs ~28 ms).

Here the step's tokens travel packed in one row: first the last token of each running sequence,
then each prompt piece (a newcomer's prompt, or the next piece of a long prompt that goes in
over several steps). The linear layers, norms, rotary embeddings and MLPs work token by
token, so only attention needs to know which token belongs to which sequence. That is this
module's attention function, registered with transformers' ``AttentionInterface``: every
token's keys and values go into its sequence's row of a :class:`~.slotcache.SlotCache`, the
decode tokens attend to their rows, a newcomer's first piece attends causally to itself, and a
later piece to the earlier ones and causally to itself.

Whether a model's code takes this path correctly is checked once at load time against its own
forward pass (:func:`supports_mixed_steps`); models that fail fall back to alternating steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .kvcache import RunningBatch, new_cache
from .slotcache import SlotCache

log = logging.getLogger("ragraph.llm.ragged")

RAGGED = "ragraph_mixed"
STEP_KWARG = "ragraph_step"


@dataclass
class Piece:
    """A chunk of one prompt to prefill: ``slot`` None for a newcomer (it gets a free slot),
    else the slot its earlier chunks are in; ``position`` is its first token's position and
    ``total`` the whole prompt's length (0: the chunk is the whole prompt)."""

    ids: list[int]
    position: int = 0
    slot: int | None = None
    total: int = 0


@dataclass
class MixedStep:
    """What the attention function needs for one step, set up by :func:`forward`: the cache,
    the decoding rows' slots (in packed order) and where each prompt piece goes."""

    cache: SlotCache
    running: list[int]
    placed: list[tuple[int, int, int]]  # (slot, first column, tokens) of each piece, in packed order
    col: int = 0
    _decode: tuple[torch.Tensor, torch.Tensor, int] | None = field(default=None, repr=False)
    _pieces: dict[int, tuple[int, torch.Tensor]] = field(default_factory=dict, repr=False)

    def decode_view(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The running slots as an index tensor, the mask SDPA takes over the live span
        [span, 1, 1, columns], and the span's first column; built once per step, not per layer."""
        if self._decode is None:
            cache = self.cache
            start = cache.start
            index = torch.tensor(self.running, device=cache.device)
            self._decode = (index, cache.mask[: cache.span, None, None, start : self.col + 1], start)
        return self._decode

    def piece_mask(self, slot: int, first: int, n: int) -> tuple[int, torch.Tensor]:
        """For a later chunk of a prompt: the row's first column, and the mask [1, 1, n, columns]
        letting each of the chunk's tokens see the earlier chunks and itself causally; built once
        per step, not per layer."""
        if slot not in self._pieces:
            cache = self.cache
            low = cache.first[slot]
            columns = torch.arange(low, first + n, device=cache.device)
            own = torch.arange(first, first + n, device=cache.device)
            mask = cache.mask[slot, low : first + n][None, :] & (columns[None, :] <= own[:, None])
            self._pieces[slot] = (low, mask[None, None])
        return self._pieces[slot]


def _positions(running_positions: list[int], pieces: list[Piece], device: torch.device) -> torch.Tensor:
    """Position ids of the packed tokens, [1, tokens]: each running row's next position, then
    each piece's positions."""
    out = list(running_positions)
    for piece in pieces:
        out.extend(range(piece.position, piece.position + len(piece.ids)))
    return torch.tensor([out], device=device)


def _last_tokens(rows: int, pieces: list[Piece], device: torch.device) -> torch.Tensor:
    """Indices of the packed tokens whose logits the step returns: every decode token and each
    piece's last token."""
    index = list(range(rows))
    end = rows
    for piece in pieces:
        end += len(piece.ids)
        index.append(end - 1)
    return torch.tensor(index, device=device)


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    gqa = query.shape[1] != key.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        is_causal=mask is None and query.shape[2] > 1,
        scale=scaling,
        enable_gqa=gqa,
    )


def mixed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over packed tokens [1, heads, tokens, dim] (see the module docstring). Without a
    step in the kwargs (a plain call of the model) it is transformers' SDPA attention."""
    step: MixedStep | None = kwargs.pop(STEP_KWARG, None)
    if step is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if kwargs.get("softcap") is not None or getattr(module, "sliding_window", None) or dropout:
        raise NotImplementedError("mixed steps support plain causal attention only")
    keys, values = step.cache.layer(module.layer_idx, key, value)  # type: ignore[arg-type]
    col, rows = step.col, len(step.running)
    parts: list[torch.Tensor] = []
    if rows:
        index, mask, start = step.decode_view()
        # [1, heads, rows, dim] -> [rows, heads, dim]: the running rows' new column
        keys[index, :, col] = key[0, :, :rows].transpose(0, 1)
        values[index, :, col] = value[0, :, :rows].transpose(0, 1)
        span = mask.shape[0]
        q = query.new_zeros((span, query.shape[1], 1, query.shape[-1]))
        q[index, :, 0] = query[0, :, :rows].transpose(0, 1)
        out = _attend(q, keys[:span, :, start : col + 1], values[:span, :, start : col + 1], mask, scaling)
        parts.append(out[index, :, 0].transpose(0, 1).unsqueeze(0))
    begin = rows
    for slot, first, n in step.placed:
        q, k, v = (t[:, :, begin : begin + n] for t in (query, key, value))
        keys[slot, :, first : first + n] = k[0]
        values[slot, :, first : first + n] = v[0]
        if first == step.cache.first[slot]:  # a prompt's first piece: causal over itself
            parts.append(_attend(q, k, v, None, scaling))
        else:  # a later piece: its earlier pieces, then itself causally
            low, mask = step.piece_mask(slot, first, n)
            rows_k, rows_v = keys[slot : slot + 1, :, low : first + n], values[slot : slot + 1, :, low : first + n]
            parts.append(_attend(q, rows_k, rows_v, mask, scaling))
        begin += n
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(RAGGED, mixed_attention)


def forward(
    model: Any, cache: SlotCache, running: list[int], last: list[int], at: list[int], pieces: list[Piece]
) -> tuple[torch.Tensor, list[int]]:
    """One mixed step: the sequences in slots ``running`` feed their ``last`` token at position
    ``at``; ``pieces`` of prompts are prefilled. Returns logits [rows, vocab] (running rows,
    then each piece's last token) and each piece's slot."""
    device = model.device
    if not running and not pieces:
        return torch.empty((0, 0), device=device), []
    placed = cache.begin(running, [(piece.slot, len(piece.ids), piece.total or len(piece.ids)) for piece in pieces])
    where = [(slot, first, len(piece.ids)) for (slot, first), piece in zip(placed, pieces, strict=True)]
    step = MixedStep(cache, running, where, col=cache.end - 1)
    ids = torch.tensor([last + [t for piece in pieces for t in piece.ids]], dtype=torch.long, device=device)
    out = model(
        input_ids=ids,
        position_ids=_positions(at, pieces, device),
        use_cache=False,
        logits_to_keep=_last_tokens(len(running), pieces, device),
        **{STEP_KWARG: step},
    )
    return out.logits[0].float(), [slot for slot, _ in placed]


def _reference(model: Any, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, -1].float()


def switch(model: Any, on: bool) -> None:
    """Give ``model`` the mixed-step attention (``on``) or the one it had before."""
    current = str(model.config._attn_implementation)
    if on and current != RAGGED:
        model._ragraph_previous_attention = current
        model.set_attn_implementation(RAGGED)
    elif not on and current == RAGGED:
        model.set_attn_implementation(getattr(model, "_ragraph_previous_attention", "sdpa"))


@torch.inference_mode()
def supports_mixed_steps(model: Any, vocab: int) -> bool:
    """Whether ``model``'s forward pass takes mixed steps correctly: a short schedule of them (two
    prompts prefilled together, then a step decoding both beside a third prompt, then one
    decoding all three) must give the logits of the model's own forward pass on each whole
    sequence so far. The model's attention is left as it was."""
    if not RunningBatch(new_cache(model.config), torch.ones(1, 1)).mergeable():  # sliding windows, recurrent layers
        log.info("mixed steps: off (the model's KV cache has layers other than full attention)")
        return False
    was_on = str(model.config._attn_implementation) == RAGGED
    seqs = [[(k * i + 3) % vocab for i in range(n)] for k, n in ((7, 6), (5, 4), (3, 3))]
    schedule = [[0, 1], [2], []]  # which sequences join at each step; every earlier one decodes
    fed = [[(11 + 2 * k + step) % vocab for step in range(2)] for k in range(3)]  # tokens fed back
    switch(model, False)

    def decoded(k: int, step: int) -> int:  # decode steps sequence k has had before ``step``
        return step - next(i for i, j in enumerate(schedule) if k in j)

    expected: list[torch.Tensor] = []
    got: list[torch.Tensor] = []
    for step, joining in enumerate(schedule):
        running = [k for k in range(3) if k not in joining and any(k in j for j in schedule[:step])]
        expected.extend(_reference(model, seqs[k] + fed[k][: decoded(k, step)]) for k in running + joining)
    switch(model, True)
    try:
        cache, slots = SlotCache(3, model.device), dict[int, int]()
        for step, joining in enumerate(schedule):
            running = [k for k in range(3) if k in slots]
            logits, new = forward(
                model,
                cache,
                [slots[k] for k in running],
                [fed[k][decoded(k, step) - 1] for k in running],
                [len(seqs[k]) + decoded(k, step) - 1 for k in running],
                [Piece(seqs[k]) for k in joining],
            )
            slots.update(zip(joining, new, strict=True))
            got.extend(logits)
    except Exception as exc:  # noqa: BLE001 - any failure means: not this model
        log.info("mixed steps: off (the model's forward pass does not take them: %s)", exc)
        return False
    finally:
        switch(model, was_on)
    tolerance = 1e-3 if model.dtype == torch.float32 else 5e-2
    worst = max(float((g - e).abs().max() / e.abs().max().clamp(min=1.0)) for g, e in zip(got, expected, strict=True))
    if worst > tolerance:
        log.info("mixed steps: off (their logits differ from the model's by %.2g, more than %.0g)", worst, tolerance)
        return False
    log.info("mixed steps: on (decode and prefill share a forward pass; checked, worst difference %.1g)", worst)
    return True
