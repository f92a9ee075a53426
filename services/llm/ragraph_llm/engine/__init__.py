"""The LLM's generation engine, in parts:

- :class:`~.engine.Engine`: the engine thread, the asyncio face (``generate``), the queue, and
  the step loop: plan, run, emit, reap.
- a stepper, chosen at load (:mod:`.stepper`): :mod:`.mixed` (decode and prefill in one forward
  pass, :mod:`.ragged` attention over a :mod:`.slotcache`) or :mod:`.alternating` (prefill and
  decode steps over a growing :mod:`.kvcache`).
- per sequence: :mod:`.sequence` (what the engine tracks, the events it hands back),
  :mod:`.sampling` (the next token), :mod:`.textstream` (tokens to text deltas, stop strings).
- :mod:`.emitter` turns a step's logits into tokens, text and events; :mod:`.outbox` carries
  them to the requests' event loops.
"""

from .engine import Engine
from .sampling import SamplingParams
from .sequence import Event

__all__ = ["Engine", "Event", "SamplingParams"]
