"""GGUF models through the user path (``--model FILE.gguf``, a directory plus ``gguf_file``) and the
converted-weights cache, on a tiny Llama written as GGUF with ``GGUFWriter`` (float32, so the
round trip is exact)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ragraph_llm import gguf
from ragraph_llm.engine import Engine
from ragraph_llm.gguf import META_FILE, converted_dir, find_gguf, load_gguf
from ragraph_llm.model import LanguageModel
from ragraph_llm.settings import LLMSettings
from ragraph_llm.sources import ModelSourceError

from tests.fixtures.servers import REPO
from tests.fixtures.tiny_gguf import write_tiny_gguf
from tests.unit.llm.engine.test_engine import PROMPTS, _generate, _load


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_llm_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def gguf_lm(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> LanguageModel:
    cache = tmp_path_factory.mktemp("gguf-cache")
    return LanguageModel(LLMSettings(model=str(tiny_gguf), device="cpu", cache_dir=str(cache)))


@pytest.fixture(scope="module")
def reference(tiny_llm_dir: Path) -> LanguageModel:
    return LanguageModel(LLMSettings(model=str(tiny_llm_dir), device="cpu", packed_weights=False))


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "gguf").iterdir() if p.is_dir() and p.name != "hashes")


def test_a_gguf_file_loads_with_its_weights_tokenizer_and_chat_template(
    tiny_gguf: Path, tmp_path: Path, reference: LanguageModel
) -> None:
    lm = LanguageModel(LLMSettings(model=str(tiny_gguf), device="cpu", cache_dir=str(tmp_path), packed_weights=False))
    assert lm.name == str(tiny_gguf.absolute())
    got, want = lm.model.state_dict(), reference.model.state_dict()
    assert set(got) == set(want)
    assert [k for k in want if not torch.equal(got[k], want[k])] == []  # q/k un-permuted, nothing lost
    for text in PROMPTS:
        assert lm.encode(text) == reference.encode(text)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is RAG?"}]
    assert lm.has_chat_template
    assert lm.render(None, messages, ["a passage"]) == reference.render(None, messages, ["a passage"])
    assert (lm.window, lm.eos_ids, lm.pad_id) == (reference.window, reference.eos_ids, reference.pad_id)


def test_engine_greedy_output_on_a_gguf_model_equals_generate(gguf_lm: LanguageModel) -> None:
    prompts = [gguf_lm.encode(PROMPTS[i % len(PROMPTS)]) for i in range(6)]
    tokens = [10 + 5 * (i % 3) for i in range(6)]
    expected = [_generate(gguf_lm, p, n) for p, n in zip(prompts, tokens, strict=True)]
    engine = Engine(lambda: gguf_lm, max_batch_size=4, max_queued=16, max_batch_time_ms=2.0)
    try:
        got = asyncio.run(_load(engine, prompts, tokens))
    finally:
        engine.close()
    assert got == expected and len(set(got)) > 1


def test_second_load_reads_the_cache_and_a_changed_file_misses(
    tiny_gguf: Path, tiny_llm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, model = tmp_path / "cache", tmp_path / "models" / "m.gguf"
    model.parent.mkdir()
    shutil.copy(tiny_gguf, model)
    entry, wrote = converted_dir(model, cache)
    assert wrote and _entries(cache) == [entry.name]
    meta = json.loads((entry / META_FILE).read_text())
    assert meta["source"] == str(model) and meta["size"] == model.stat().st_size and len(meta["sha256"]) == 64
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in entry.iterdir()}

    def no_conversion(path: Path) -> None:
        raise AssertionError(f"converted {path} again")

    monkeypatch.setattr(gguf, "convert", no_conversion)
    assert converted_dir(model, cache) == (entry, False)
    lm = LanguageModel(LLMSettings(model=str(model), device="cpu", cache_dir=str(cache)))  # the user path
    assert lm.name == str(model.absolute())
    copy = tmp_path / "elsewhere.gguf"  # same bytes at another path: the same entry
    shutil.copy(model, copy)
    assert converted_dir(copy, cache) == (entry, False)

    monkeypatch.undo()
    write_tiny_gguf(tiny_llm_dir, model, name="tiny-llama-retrained")  # new bytes in the same file
    changed, wrote = converted_dir(model, cache)
    assert wrote and changed != entry and _entries(cache) == sorted([entry.name, changed.name])
    assert json.loads((changed / META_FILE).read_text())["sha256"] != meta["sha256"]


def test_dtype_applies_after_dequantization(tiny_gguf: Path, tmp_path: Path, reference: LanguageModel) -> None:
    settings = LLMSettings(model=str(tiny_gguf), device="cpu", dtype="bfloat16", cache_dir=str(tmp_path))
    lm = LanguageModel(settings.model_copy(update={"packed_weights": False}))
    assert lm.dtype == torch.bfloat16 and {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    want = reference.model.state_dict()["model.layers.0.mlp.up_proj.weight"].to(torch.bfloat16)
    assert torch.equal(lm.model.state_dict()["model.layers.0.mlp.up_proj.weight"], want)
    (entry,) = _entries(tmp_path)
    assert json.loads((tmp_path / "gguf" / entry / "config.json").read_text())["dtype"] == "float32"


def test_a_directory_with_gguf_file_and_clear_errors(tiny_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "a.gguf")
    assert find_gguf(str(folder)) == (folder / "a.gguf").absolute()  # one GGUF, no config.json: that one
    shutil.copy(tiny_gguf, folder / "b.gguf")
    assert find_gguf(str(folder), "b.gguf") == (folder / "b.gguf").absolute()
    with pytest.raises(ModelSourceError, match=r"several GGUF files \(a.gguf, b.gguf\).*RAGRAPH_LLM_GGUF_FILE"):
        find_gguf(str(folder))
    with pytest.raises(ModelSourceError, match="gguf_file 'c.gguf': no such file in model directory"):
        find_gguf(str(folder), "c.gguf")
    with pytest.raises(ModelSourceError, match="no such GGUF file"):
        find_gguf(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="neither a save_pretrained model"):
        find_gguf(str(tmp_path / "empty"))
    assert find_gguf("Qwen/Qwen2.5-0.5B-Instruct") is None  # a checkpoint: transformers' own path
    with pytest.raises(ModelSourceError, match="GGUF file 'x.Q4_0.gguf' of hub model 'nobody/nothing'"):
        find_gguf("nobody/nothing", "x.Q4_0.gguf")  # HF_HUB_OFFLINE=1 and not cached
    with pytest.raises(ModelSourceError, match="needs a model directory or hub id; the model is 'auto'"):
        LanguageModel(LLMSettings(model="auto", gguf_file="a.gguf", device="cpu"))
    lm = LanguageModel(LLMSettings(model=str(folder), gguf_file="b.gguf", device="cpu", cache_dir=str(tmp_path)))
    assert lm.name == str((folder / "b.gguf").absolute())


def test_two_processes_converting_at_once_leave_one_entry(tiny_gguf: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from ragraph_llm.gguf import converted_dir\n"
        "entry, wrote = converted_dir(Path(sys.argv[1]), Path(sys.argv[2])); print(entry.name, wrote)\n"
    )
    cmd = [sys.executable, "-c", script, str(tiny_gguf), str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in "ab"]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    results = sorted(out.split() for out, _ in outs)
    assert results[0][0] == results[1][0] and [r[1] for r in results] == ["False", "True"]
    assert _entries(tmp_path) == [results[0][0]]
    assert not [p.name for p in (tmp_path / "gguf").iterdir() if ".tmp-" in p.name]


def test_an_unwritable_cache_dir_converts_in_memory(
    tiny_gguf: Path, tmp_path: Path, reference: LanguageModel, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache dir should be")
    with caplog.at_level(logging.WARNING, logger="ragraph.llm"):
        model, tokenizer = load_gguf(tiny_gguf, blocked, torch.float32)
    assert "cannot be written" in caplog.text and "converting" in caplog.text
    want = reference.model.state_dict()["model.norm.weight"]
    assert torch.equal(model.state_dict()["model.norm.weight"], want)
    assert tokenizer("hello world")["input_ids"] == reference.encode("hello world")
