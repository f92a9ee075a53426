"""The corpus of ``bench/answers.py``: the docstrings of two installed third-party libraries,
``requests`` and ``click`` (text none of ragraph's authors wrote), extracted from the packages in
this interpreter at bench time into one Markdown file per public function or class.

    python bench/answers_corpus.py OUT_DIR      # writes OUT_DIR/<module>.<name>.md, prints the count

A class's file holds the class docstring and then, under ``## Class.member``, the docstring of
each public method or property defined on it. The file name (``requests.api.get.md``) is the
document id the QA set (``bench/answers/questions.jsonl``) names as the source of each fact.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

# The modules whose public objects make up the corpus (only objects defined in them, so
# re-exports are not written twice).
MODULES = (
    "requests.api",
    "requests.sessions",
    "requests.models",
    "requests.adapters",
    "requests.auth",
    "requests.structures",
    "requests.exceptions",
    "requests.cookies",
    "requests.utils",
    "click.core",
    "click.decorators",
    "click.types",
    "click.termui",
    "click.utils",
    "click.exceptions",
    "click.testing",
    "click.parser",
    "click.formatting",
    "click.globals",
)
MIN_CHARS = 80  # shorter docstrings ("Returns the foo.") carry no fact worth asking about


def _doc(obj: object) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else ""


def _members(cls: type) -> list[tuple[str, str]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        doc = _doc(target)
        if len(doc) >= MIN_CHARS // 2 and (inspect.isfunction(target) or isinstance(member, property)):
            out.append((name, doc))
    return out


def documents() -> dict[str, str]:
    """``{file name: text}`` for every public function or class with a docstring worth a file."""
    docs: dict[str, str] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = _doc(obj)
            parts = [f"# {module_name}.{name}", doc] if doc else [f"# {module_name}.{name}"]
            if inspect.isclass(obj):
                parts += [f"## {name}.{member}\n\n{text}" for member, text in _members(obj)]
            text = "\n\n".join(parts)
            if len(text) - len(parts[0]) >= MIN_CHARS:
                docs[f"{module_name}.{name}.md"] = text + "\n"
    return docs


def write_corpus(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in documents().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/answers_corpus.py OUT_DIR")
    written = write_corpus(Path(sys.argv[1]))
    print(f"{len(written)} documents, {sum(p.stat().st_size for p in written)} bytes in {sys.argv[1]}")
