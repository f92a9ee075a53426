"""Turning generated token ids into text deltas: never half a UTF-8 character, and stop strings
never leak (text that may be the start of a stop string is held back until it is clear)."""

from __future__ import annotations

from typing import Any


class TextStream:
    """Incremental detokenizer for one sequence. ``push`` each new token; it returns the text now
    safe to send and whether a stop string ended the text. ``finish`` flushes what was held back.

    Decoding uses a short window of earlier tokens as a prefix (as TGI and vLLM do) so tokenizers
    that drop a leading space on a lone token still decode correctly, in O(1) per token."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""
        self._sent = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything sent so far (what the caller saw)."""
        return self._text[: self._sent]

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        current = self._decode(self._ids[self._prefix_offset :])
        if len(current) > len(prefix) and not current.endswith("\ufffd"):
            self._text += current[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The held-back tail (no stop string completed). Incomplete UTF-8 at the very end is
        decoded as the tokenizer decodes it."""
        if self.stopped:
            return ""
        if self._read_offset < len(self._ids):
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            self._text += self._decode(self._ids[self._prefix_offset :])[len(prefix) :]
            self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text, start = self._text, self._sent
        hit = -1
        for stop in self._stop:
            at = text.find(stop, start)
            if at != -1 and (hit == -1 or at < hit):
                hit = at
        if hit != -1:
            self.stopped = True
            self._text = text[:hit]
            self._sent = hit
            return text[start:hit]
        end = len(text) if final else len(text) - self._held_back(text, start)
        self._sent = end
        return text[start:end]

    def _held_back(self, text: str, start: int) -> int:
        """Length of the longest unsent suffix that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text) - start), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
