"""Corpora: where the text comes from, as an ordered stream of documents.

`load_corpus(spec)` understands:
- `default`: the embedded corpus, English technical prose that ships with every CPython: the documentation topics of
  `pydoc_data.topics` (paragraphs grouped into documents of a few hundred characters) plus the standard library's
  docstrings (read with `ast`, never imported). About 1.5M characters in about 3,000 documents; no download.
- a text file, a folder (its `*.txt` and `*.md` files), or a glob: one document per file, or per paragraph with
  `--split paragraphs`;
- a `.jsonl` file: one document per line, text in the field `text` (or `--text-field`);
- `hf:NAME[:SPLIT]`: a Hugging Face data set by name (needs the network and `XENOFEAT_ONLINE=1`).

Files that are not valid UTF-8 are skipped, counted, and reported (one warning line); a corpus that yields no
documents is an error. The order is deterministic (files sorted by path), so a cache can be resumed and audited.
"""

from __future__ import annotations

import ast
import glob
import json
import logging
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from activations.errors import UserError

log = logging.getLogger(__name__)

# stdlib folders whose docstrings are tests, demos or vendored code rather than documentation
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
    "ensurepip",
}
MIN_DOC_CHARS = 200


@dataclass(frozen=True)
class Document:
    """One document of a corpus; `source` says where it came from (file, topic or object)."""

    text: str
    source: str


@dataclass
class Corpus:
    """A named, re-iterable stream of documents."""

    spec: str
    _docs: list[Document] = field(repr=False)
    skipped_files: int = 0

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs)

    def __len__(self) -> int:
        return len(self._docs)


def _group_paragraphs(text: str, source: str, min_chars: int = MIN_DOC_CHARS) -> list[Document]:
    """Split on blank lines and merge consecutive paragraphs until each document has `min_chars` characters."""
    docs: list[Document] = []
    buf: list[str] = []
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        buf.append(para)
        if sum(len(p) for p in buf) >= min_chars:
            docs.append(Document("\n\n".join(buf), f"{source}#{len(docs)}"))
            buf = []
    if buf and sum(len(p) for p in buf) >= min_chars // 2:
        docs.append(Document("\n\n".join(buf), f"{source}#{len(docs)}"))
    return docs


def _stdlib_docstrings() -> list[Document]:
    """Docstrings of at least MIN_DOC_CHARS characters from the standard library's sources, parsed with ast."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[Document] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few stdlib files are deliberately broken (encoding tests); they hold no prose
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_DOC_CHARS:
                        where = getattr(node, "name", "<module>")
                        docs.append(Document(doc, f"stdlib:{rel}:{where}"))
    return docs


def default_corpus() -> Corpus:
    """The embedded default corpus (pydoc topics + stdlib docstrings)."""
    from pydoc_data.topics import topics

    docs: list[Document] = []
    for name in sorted(topics):
        docs.extend(_group_paragraphs(topics[name], f"pydoc:{name}"))
    docs.extend(_stdlib_docstrings())
    return Corpus("default", docs)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    except OSError as err:
        raise UserError(f"--corpus: cannot read {path} ({err.strerror})") from err


def _jsonl(path: Path, text_field: str) -> Iterator[Document]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"--corpus: {path}:{lineno} is not valid JSON ({err.msg})") from err
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise UserError(
                    f"--corpus: {path}:{lineno} has no string field {text_field!r} (see --text-field)"
                )
            yield Document(text, f"{path}:{lineno}")


def _hf(spec: str, text_field: str) -> list[Document]:
    name, _, split = spec[3:].partition(":")
    if os.environ.get("XENOFEAT_ONLINE") != "1" and not Path(name).exists():
        raise UserError(
            f"--corpus: {spec} needs the Hugging Face hub; set XENOFEAT_ONLINE=1 to allow downloads "
            "(or point --corpus at a local folder or .jsonl file)"
        )
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs the message
        raise UserError(f"--corpus: could not load {spec} ({type(err).__name__}: {err})") from err
    if text_field not in ds.column_names:
        raise UserError(
            f"--corpus: {spec} has no column {text_field!r} (columns: {', '.join(ds.column_names)})"
        )
    return [Document(str(t), f"{spec}#{i}") for i, t in enumerate(ds[text_field])]


def _files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".md", ".jsonl"))
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not matches:
        raise UserError(
            f"--corpus: {spec} is not 'default', a file, a folder, a glob that matches files, or hf:NAME"
        )
    return matches


def load_corpus(spec: str, *, text_field: str = "text", split: str = "file") -> Corpus:
    """Resolve a corpus spec into documents. `split` is `file` (one document per file) or `paragraphs`."""
    if split not in ("file", "paragraphs"):
        raise UserError(f"--split: {split!r} is not 'file' or 'paragraphs'")
    if spec == "default":
        return default_corpus()
    if spec.startswith("hf:"):
        return Corpus(spec, _hf(spec, text_field))
    docs: list[Document] = []
    skipped = 0
    for path in _files(spec):
        if path.suffix == ".jsonl":
            docs.extend(_jsonl(path, text_field))
            continue
        text = _read_text(path)
        if text is None:
            skipped += 1
            continue
        if split == "paragraphs":
            docs.extend(_group_paragraphs(text, str(path)))
        elif text.strip():
            docs.append(Document(text, str(path)))
    if skipped:
        log.warning("--corpus: skipped %d file(s) that are not valid UTF-8", skipped)
    if not docs:
        what = f" ({skipped} file(s) skipped as not UTF-8)" if skipped else ""
        raise UserError(f"--corpus: {spec} holds no text{what}")
    return Corpus(spec, docs, skipped)
