"""Tiny, randomly initialised Hugging Face causal LMs built locally (no hub access): for tests, benchmarks, and
``ragraph up`` / ``make demo`` when no real model can be loaded offline (their answers are random tokens).

``build_tiny_llm(path, kind=...)`` trains a byte-level BPE tokenizer on a small built-in English corpus, builds a
model of the requested kind around it and writes everything with ``save_pretrained`` so that
``AutoTokenizer.from_pretrained(path)`` and ``AutoModelForCausalLM.from_pretrained(path)`` load it offline.

Kinds:

- ``"tiny"``: a 2-layer Llama (hidden 64) with a large ``initializer_range`` (0.4), so that its greedy output is
  varied and depends on the whole prompt; batched, left-padded greedy decoding matches one-prompt-at-a-time
  decoding token for token. The ``lm_head`` rows of the special tokens (EOS included) and of tokens that are not
  printable text on their own are scaled far down, so greedy generation runs to ``max_new_tokens`` and yields clean
  text.
- ``"bench"``: a ~19.5M-parameter Llama with normal (0.02) initialisation, for throughput benchmarks.
- ``"gpt2"``: a 2-layer GPT-2 (hidden 64) with the same tokenizer and the same output-row scaling, to show that any
  causal LM works.
- ``"gpt2-small"``: GPT-2 small's shape (12 layers, hidden 768, 12 heads, 50257-row tied embedding: 124M
  parameters) with normal (0.02) initialisation, for GPU throughput benchmarks; the embedding rows past the
  tokenizer's vocabulary are scaled down with the special tokens', so greedy output stays decodable.

Building is deterministic for a given ``seed``, takes a few seconds, and is safe against concurrent builders
(a per-path file lock, a build into a temporary sibling directory, then an atomic rename).

Build one from the shell: ``python -m ragraph_llm.tiny PATH --kind bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .filelock import file_lock

KINDS = ("tiny", "bench", "gpt2", "gpt2-small")
GPT2_SMALL_VOCAB = 50257

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)
VOCAB_SIZE = 768

# "<|role|>\ncontent</s>\n" per message; add_generation_prompt appends "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

CORPUS: tuple[str, ...] = (
    "Retrieval-augmented generation combines a search index with a language model to ground its answers.",
    "The retriever embeds the question and returns the passages whose vectors are closest to it.",
    "A reranker reads each candidate passage next to the query and scores how relevant it really is.",
    "Dense embeddings capture meaning, while sparse keyword indexes capture exact terms and rare names.",
    "Chunking long documents into overlapping windows keeps every passage inside the context length.",
    "The generator is prompted with the retrieved context and asked to cite the sources it used.",
    "Hallucinations become less frequent when the model can quote the evidence it was given.",
    "An inference graph routes each request through the encoder, the retriever and the generator.",
    "Johannes Gutenberg built a printing press with movable metal type in Mainz around 1450.",
    "The printing press made books cheaper, and literacy spread quickly across Europe.",
    "Printers set each line of type by hand, letter by letter, in a small composing stick.",
    "Ink made from soot and linseed oil stuck to the metal letters better than water-based ink.",
    "Within fifty years, presses in more than two hundred cities had printed millions of books.",
    "Pamphlets and newspapers carried news, arguments and advertisements to ordinary readers.",
    "A packet travels from the client to the server through switches, routers and long fibre links.",
    "TCP retransmits lost segments and slows down when it detects congestion on the path.",
    "The domain name system translates a host name like example.com into an IP address.",
    "HTTP/2 multiplexes many streams over one connection, and gRPC builds its calls on top of it.",
    "Latency is the time a request waits; throughput is how many requests finish every second.",
    "A load balancer spreads incoming connections across several healthy backend servers.",
    "Timeouts and retries with exponential backoff keep a flaky network from taking a service down.",
    "TLS encrypts the traffic between two peers after they agree on keys during the handshake.",
    "To make a simple tomato sauce, soften garlic in olive oil, add the tomatoes and simmer slowly.",
    "Bread needs flour, water, salt and yeast, plus time for the dough to rise twice.",
    "Season the soup at the end, because the flavour concentrates as the liquid reduces.",
    "A sharp knife is safer than a dull one, since it does not slip on the skin of an onion.",
    "Roast the vegetables at a high temperature until their edges turn brown and sweet.",
    "Whisk the eggs with a pinch of salt, then cook them gently over low heat, stirring often.",
    "Rice should rest for ten minutes under a lid after cooking so the grains finish steaming.",
    "Fresh herbs such as basil and parsley are best added just before the dish is served.",
    "The river winds through the valley, past old stone bridges and quiet green meadows.",
    "In spring the orchard blooms with white and pink flowers, and the bees return to work.",
    "The lighthouse keeper climbed the narrow stairs every evening to light the lamp.",
    "Mountains force moist air to rise and cool, so clouds gather and rain falls on one side.",
    "The library opens at nine o'clock, and the reading room is quiet until the afternoon.",
    "Children in the park were flying kites, chasing dogs and laughing in the warm sunshine.",
    "The old clock in the hall struck twelve, and everyone in the house fell silent.",
    "Trains leave the central station every fifteen minutes for the airport and the coast.",
    "Python lists grow dynamically, while tuples are fixed once they have been created.",
    "A unit test checks one small piece of behaviour; an integration test checks how parts fit.",
    "The compiler turns source code into machine instructions that the processor can execute.",
    "Version control records every change, so a team can review, revert and merge its work.",
    "A cache keeps recent results close at hand, trading memory for fewer slow lookups.",
    "Matrix multiplication dominates the cost of running a transformer on long sequences.",
    "Attention lets each token look at every earlier token and weigh how much it matters.",
    "Greedy decoding always picks the most likely next token, while sampling adds randomness.",
    "Batching several requests together keeps the accelerator busy and raises throughput.",
    "The key-value cache stores past attention states so each new token costs less to compute.",
    "Tokenizers split text into pieces; byte-level models can represent any string at all.",
    "What is the capital of France? Paris is the capital, and it sits on the river Seine.",
    "How many days are in a leap year? There are 366 days, one more than in a common year.",
    "Who wrote the first printed Bible? It is usually credited to Gutenberg and his workshop.",
    "Please summarise the document in three sentences and list the sources you relied on.",
    "Thank you for your help today; the answer was clear, short and easy to follow.",
    "The weather tomorrow will be cloudy in the morning, with sunshine after lunch.",
    "Numbers like 3.14, 2024, 100% and $42.50 appear in many ordinary documents.",
    "She opened the window, took a deep breath and decided to walk to the market instead.",
    "Good documentation explains why a design was chosen, not only how to use it.",
    "Café owners in Zürich serve crème brûlée, and the naïve tourist says “Grüße!” 👋 🙂.",
    "Accented words such as résumé, façade, jalapeño and São Paulo must survive a round trip.",
    "Ask a question, retrieve the evidence, read it carefully, and then write the answer.",
    "The system prompt sets the rules; the user asks; the assistant replies politely and briefly.",
)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _train_tokenizer() -> Any:
    """A byte-level BPE (round-trips any UTF-8) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


_LLAMA_SIZES: dict[str, dict[str, Any]] = {
    # initializer_range 0.4: varied greedy text that depends on the whole prompt
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.4,
    ),
    # ~19.5M parameters, normal init
    "bench": dict(
        hidden_size=512,
        intermediate_size=1352,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        initializer_range=0.02,
    ),
}


def _build_model(kind: str, tokenizer: Any) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids: dict[str, Any] = {
        "bos_token_id": int(tokenizer.bos_token_id),
        "eos_token_id": int(tokenizer.eos_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
    }
    vocab = len(tokenizer)
    config: Any
    model: Any
    if kind in _LLAMA_SIZES:
        config = LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, **_LLAMA_SIZES[kind], **ids)
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=256,
            initializer_range=0.4,
            **ids,
        )
        model = GPT2LMHeadModel(config)
    elif kind == "gpt2-small":
        config = GPT2Config(vocab_size=GPT2_SMALL_VOCAB, n_embd=768, n_layer=12, n_head=12, n_positions=1024, **ids)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if kind != "bench":
        # Scale the output rows of special tokens (EOS included) and of tokens that are not printable text on their
        # own (lone UTF-8 continuation bytes, control bytes) far down, so that greedy decoding runs to
        # max_new_tokens and always yields clean text. (GPT-2 ties these rows to its input embeddings; harmless.)
        with torch.no_grad():
            rows = _suppressed_ids(tokenizer) + list(range(vocab, int(config.vocab_size)))
            model.get_output_embeddings().weight[rows] *= 0.05
    model.generation_config.update(do_sample=False, **ids)
    tokenizer.model_max_length = int(config.max_position_embeddings)
    return model.eval()


def _suppressed_ids(tokenizer: Any) -> list[int]:
    special = {int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    suppressed = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if token_id in special or "\ufffd" in text or not all(c.isprintable() or c == "\n" for c in text):
            suppressed.append(token_id)
    return suppressed


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' progress bars (e.g. "Writing model shards") for the block, restoring them after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _write(directory: Path, kind: str, seed: int) -> None:
    tokenizer = _train_tokenizer()
    with _seeded(seed):
        model = _build_model(kind, tokenizer)
    with _quiet():
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
    # transformers 5 records its own "TokenizersBackend" class and keeps the template in chat_template.jinja; name
    # the class both 4.x and 5.x know and keep a copy of the template in the config too, for 4.x readers.
    config_path = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE)
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_llm(path: Path, *, kind: str = "tiny", seed: int = 0) -> Path:
    """Build (if path/config.json is missing) and return path."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        if (path / "config.json").is_file():  # another builder finished while we waited
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            _write(tmp, kind, seed)
            tmp.chmod(0o755)  # mkdtemp makes it 0700 (and safetensors files come out 0600)
            for entry in tmp.iterdir():
                entry.chmod(0o644)
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                os.replace(tmp, path)
            else:  # an existing, non-empty directory: move files in, config.json (the "done" marker) last
                entries = sorted(tmp.iterdir(), key=lambda p: p.name == "config.json")
                for entry in entries:
                    os.replace(entry, path / entry.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny local Hugging Face causal LM.")
    parser.add_argument("path", type=Path, help="output directory")
    parser.add_argument("--kind", choices=KINDS, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny_llm(args.path, kind=args.kind, seed=args.seed)


if __name__ == "__main__":
    main()
