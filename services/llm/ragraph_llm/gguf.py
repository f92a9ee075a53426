"""GGUF models: finding the file a model setting names, and a cache of its converted weights.

transformers loads a GGUF file by dequantizing every tensor (and building the tokenizer, chat
template included, from the file's metadata): 15-20 s for the 98 MB SmolLM2-135M Q4_1 file on a
2-core machine, far more for bigger files. The first load therefore writes the dequantized model
and its tokenizer with ``save_pretrained`` into ``CACHE_DIR/gguf/<key>/`` and every later load
reads that directory (well under a second for the same model; docs/benchmarks.md).

The key is the SHA-256 of the file's bytes plus the transformers version that converted it:
a copy of the same file at another path (or downloaded again) shares one entry, a file whose
bytes changed gets a new one, and an upgrade of the converter never reads an old conversion.
Hashing costs about 0.6 s per GB (0.06 s for the 98 MB file), so the hash is remembered under
a stat key (real path, size, mtime in ns, inode): an unchanged file is not read again. A file
rewritten in place with its size and mtime kept would defeat the stat key, as it defeats make
and rsync; touching it (or clearing ``CACHE_DIR/gguf/hashes``) makes it hashed again.

Writes are atomic: each conversion goes to a temporary sibling directory renamed into place when
complete, so a reader never sees half an entry. Processes starting together serialise on a
per-key lock file (one converts, the others then read its entry); where locks do not work, the
rename still leaves exactly one complete entry. The weights are kept in float32 as dequantized;
``--dtype`` applies when they are loaded. When the cache dir cannot be written, the model is
converted in memory on every start (with a warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .filelock import file_lock
from .sources import ModelSourceError

log = logging.getLogger("ragraph.llm")

META_FILE = "ragraph-gguf.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ragraph/llm``, else ``~/.cache/ragraph/llm``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragraph" / "llm"


def _gguf_in_dir(directory: Path) -> Path | None:
    files = sorted(p for p in directory.glob("*.gguf") if p.is_file())
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise ModelSourceError(
            f"model '{directory}' holds several GGUF files ({names}): name one with RAGRAPH_LLM_GGUF_FILE"
        )
    return files[0] if files else None


def find_gguf(model: str, gguf_file: str | None = None) -> Path | None:
    """The local GGUF file that ``model`` (+ ``gguf_file``) names, or None for a transformers
    checkpoint. ``model`` may be a ``.gguf`` path; a directory, with ``gguf_file`` naming a file in
    it (or holding exactly one ``.gguf`` and no ``config.json``); or a hub id with ``gguf_file``
    naming a file of that repository (from the HF cache, or downloaded unless HF_HUB_OFFLINE)."""
    path = Path(model).expanduser()
    if model.endswith(".gguf"):
        if gguf_file:
            raise ModelSourceError(f"model '{model}' is a GGUF file already; do not also set gguf_file '{gguf_file}'")
        if not path.is_file():
            raise ModelSourceError(f"model '{model}': no such GGUF file")
        return path.absolute()
    if path.is_dir():
        if gguf_file:
            chosen = path / gguf_file
            if not chosen.is_file():
                raise ModelSourceError(f"gguf_file '{gguf_file}': no such file in model directory '{model}'")
            return chosen.absolute()
        if (path / "config.json").is_file():
            return None
        found = _gguf_in_dir(path)
        if found is None:
            raise ModelSourceError(
                f"model '{model}' is a directory with neither a save_pretrained model (config.json) nor a .gguf file"
            )
        return found.absolute()
    if not gguf_file:
        return None
    return _hub_gguf(model, gguf_file)


def _hub_gguf(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))  # a snapshot link: keeps the .gguf name
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear message
        raise ModelSourceError(
            f"GGUF file '{filename}' of hub model '{repo_id}' could not be loaded: {type(exc).__name__}: {exc}"
        ) from None


# -- the content key -------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def file_sha256(path: Path, cache_dir: Path) -> str:
    """SHA-256 of the file's bytes, remembered under its stat key in ``cache_dir/gguf/hashes``."""
    st = path.stat()
    stat_key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    memo = cache_dir / "gguf" / "hashes" / hashlib.sha256(stat_key.encode()).hexdigest()[:32]
    with contextlib.suppress(OSError):
        known = memo.read_text(encoding="utf-8").strip()
        if len(known) == 64:
            return known
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs the hash next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo, digest + "\n")
    return digest


def entry_name(sha256: str) -> str:
    import transformers

    return f"{sha256[:32]}-transformers-{transformers.__version__}"


# -- converting ------------------------------------------------------------------------------------


def convert(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file: every weight dequantized to float32, a plain
    transformers model (no GGUF quantizer left on it, so it can be saved and run as any other)."""
    try:
        import accelerate  # noqa: F401 - transformers needs it for GGUF, say so before it does
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelSourceError(
            f"loading GGUF model '{path}' needs the packages 'gguf' and 'accelerate' ({exc.name} is missing)"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": path.name, "dtype": torch.float32}
    try:  # transformers 5 may keep GGUF blocks packed for its own kernels: ask for plain weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4 always dequantizes
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model.eval(), tokenizer


def converted_dir(path: Path, cache_dir: Path) -> tuple[Path, bool]:
    """The cache entry (a save_pretrained directory) of GGUF file ``path``, and whether this call
    wrote it. OSError when the cache dir cannot be written."""
    sha256 = file_sha256(path, cache_dir)
    root = cache_dir / "gguf"
    entry = root / entry_name(sha256)
    if (entry / META_FILE).is_file():
        return entry, False
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{entry.name}.lock"):
        if (entry / META_FILE).is_file():  # another process converted it while we waited
            return entry, False
        started = time.monotonic()
        log.info("converting GGUF %s (sha256 %s) into %s, once ...", path, sha256[:16], entry)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=root))
        try:
            model, tokenizer = convert(path)
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            del model
            meta = {
                "source": str(path),
                "sha256": sha256,
                "size": path.stat().st_size,
                "entry": entry.name,
                "convert_s": round(time.monotonic() - started, 2),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            tmp.chmod(0o755)  # mkdtemp makes it 0700
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / META_FILE).is_file():  # not a racing writer's finished entry: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("GGUF converted in %.1fs; later starts load %s", time.monotonic() - started, entry)
    return entry, True


def load_gguf(path: Path, cache_dir: Path, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of GGUF file ``path`` in ``dtype``: from the converted-weights cache
    (written on first use), or converted in memory when the cache dir cannot be written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        entry, _ = converted_dir(path, cache_dir)
    except OSError as exc:
        log.warning(
            "GGUF cache dir %s cannot be written (%s): converting %s in memory, on every start", cache_dir, exc, path
        )
        model, tokenizer = convert(path)
        return model.to(dtype), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(entry))
    model = AutoModelForCausalLM.from_pretrained(str(entry), dtype=dtype)
    return model, tokenizer
