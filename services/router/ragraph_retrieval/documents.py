"""Finding the files to ingest and reading them as text.

A document's id is its path relative to the ingest root, with ``/`` separators, so the same
folder ingested from anywhere gives the same ids. Binary files (a NUL byte, or not UTF-8) are
skipped with a reason, as are hidden and build folders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MARKDOWN = {".md", ".markdown", ".mdx", ".rst"}
CODE = {
    ".py",
    ".pyi",
    ".js",
    ".jsx",
    ".ts",
    ".tsx",
    ".go",
    ".rs",
    ".java",
    ".kt",
    ".scala",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".cs",
    ".rb",
    ".php",
    ".swift",
    ".sh",
    ".bash",
    ".sql",
    ".proto",
    ".yaml",
    ".yml",
    ".toml",
    ".json",
    ".ini",
    ".cfg",
    ".lua",
    ".r",
    ".m",
    ".mk",
}
CODE_NAMES = {"Makefile", "Dockerfile", "CMakeLists.txt"}
SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".ragraph",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".tox",
    "dist",
    "build",
}
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    doc_id: str
    path: Path
    kind: str  # markdown | text | code


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def kind_of(path: Path) -> str:
    if path.suffix.lower() in MARKDOWN:
        return "markdown"
    if path.suffix.lower() in CODE or path.name in CODE_NAMES:
        return "code"
    return "text"


def read_text(path: Path) -> str | None:
    """The file as text, or None when it is binary."""
    data = path.read_bytes()
    if b"\x00" in data[:SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def find_files(paths: Sequence[str | Path], root: str | Path | None = None) -> Iterator[SourceFile | Skipped]:
    """Every file under ``paths`` (files or folders), with its document id. Ids are relative to
    ``root`` when given, else to each folder argument (a file argument: its own name)."""
    for arg in paths:
        base = Path(arg)
        if not base.exists():
            yield Skipped(str(arg), "no such file or folder")
            continue
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        anchor = Path(root) if root is not None else (base.parent if base.is_file() else base)
        for path in files:
            rel = path.relative_to(base) if base.is_dir() else Path(path.name)
            if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]) or rel.name.startswith("."):
                continue
            try:
                doc_id = path.resolve().relative_to(anchor.resolve()).as_posix()
            except ValueError:
                yield Skipped(str(path), f"outside the ingest root {anchor}")
                continue
            yield SourceFile(doc_id, path, kind_of(path))
