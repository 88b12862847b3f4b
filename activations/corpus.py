"""Corpora: where the text comes from, as an ordered stream of documents.

`load_corpus(spec)` understands:
- `default`: the embedded corpus, English technical prose that ships with every CPython: the documentation topics of
  `pydoc_data.topics` (paragraphs grouped into documents of a few hundred characters) plus the standard library's
  docstrings (read with `ast`, never imported). About 1.5M characters in about 3,000 documents; no download.
- `default+packages`: the default, then the docstrings of the installed packages that every install of xenofeat
  has (torch, numpy, scipy, pandas, scikit-learn, transformers, streamlit, ...: `PACKAGES`), one document from each
  package in turn, so any `--max-tokens` prefix mixes them all. About 7M tokens more; no download.
- a text file, a folder (its `*.txt` and `*.md` files), or a glob: one document per file, or per paragraph with
  `--split paragraphs`;
- a `.jsonl` file: one document per line, text in the field `text` (or `--text-field`);
- `hf:NAME[:SPLIT]`: a Hugging Face data set by name (needs the network and `XENOFEAT_ONLINE=1`).

Files that are not valid UTF-8 are skipped, counted, and reported (one warning line); a corpus that yields no
documents is an error. The order is deterministic (files sorted by path), so a cache can be resumed and audited.

Memory does not grow with the length of a file or a line: files are read in pieces of READ_CHARS characters, and a
document is handed to the tokenizer as pieces of at most MAX_PIECE_CHARS characters (see `split_pieces`), cut before
a space or newline that follows a word character, so WordPiece and byte-level BPE tokenizers give the same tokens as
for the whole text; documents no longer than that are one piece, exactly as before. Nothing is read past the point
where the packer has its `--max-tokens`. (A JSONL line is still parsed whole; a paragraph longer than
MAX_PIECE_CHARS is cut, in `--split paragraphs`, into paragraphs of that size.)
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sysconfig
from collections.abc import Callable, Iterable, Iterator
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
# folders of installed packages that hold tests, benchmarks or vendored code rather than their documentation
_SKIP_PACKAGE_DIRS = {"testing", "_vendor", "vendor", "benchmarks", "_vendored"}
PACKAGES_SPEC = "default+packages"
PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("pandas", "pandas"),
    ("sklearn", "scikit-learn"),
    ("transformers", "transformers"),
    ("streamlit", "streamlit"),
    ("h5py", "h5py"),
    ("transformer_lens", "transformer-lens"),
    ("sae_lens", "sae-lens"),
)
"""(import name, distribution) of the packages whose docstrings `default+packages` adds: xenofeat's own
dependencies and theirs, so every install has them. About 27M characters (about 7M MiniLM tokens) in total."""
MIN_DOC_CHARS = 200
# Largest piece of text handed to the tokenizer at once. A fast tokenizer holds about 70 bytes per character while it
# works (measured: a 50 MB line peaked at 3.4 GB), so this bounds it to a few MB; documents up to this size are one
# piece, exactly as before pieces existed.
MAX_PIECE_CHARS = 100_000
READ_CHARS = MAX_PIECE_CHARS  # characters read from a file at a time
# A cut point, searched from the end of a piece backwards: a space or newline right after a word character. Read on
# the reversed text, so the first match is the last cut point.
_CUT = re.compile(r"[ \n]\w")


class NotUtf8(Exception):
    """A corpus file turned out not to be UTF-8 part-way through; the packer drops what it read from it."""


def split_pieces(text: str, limit: int = MAX_PIECE_CHARS, *, final: bool = True) -> tuple[list[str], str]:
    """Cut `text` into pieces of at most `limit` characters; returns (pieces, rest).

    A piece ends before a space or newline that follows a word character, as late as possible in its second half, or
    at `limit` exactly when there is none (text without spaces). With `final` the rest is empty (it is the last
    piece); otherwise the rest (at most `limit` characters) is kept for the caller to prepend to what it reads next.
    """
    pieces: list[str] = []
    start, n = 0, len(text)
    while n - start > limit:
        half = start + limit // 2
        window = text[half : start + limit + 1][::-1]  # window[i] = text[start + limit - i]
        m = _CUT.search(window)
        cut = start + limit - m.start() if m else start + limit
        pieces.append(text[start:cut])
        start = cut
    rest = text[start:]
    if final:
        if rest:
            pieces.append(rest)
        rest = ""
    return pieces, rest


@dataclass(frozen=True)
class Document:
    """One document of a corpus; `source` says where it came from (file, topic or object).

    Its text is `text`, or, when `path` is set, the contents of that file, read piece by piece. A document with
    `drop_if_blank` that holds only whitespace is not a document at all (it gets no document id).
    """

    text: str
    source: str
    path: Path | None = None
    drop_if_blank: bool = False

    def pieces(self) -> Iterator[str]:
        """The text in pieces of at most MAX_PIECE_CHARS characters (NotUtf8 if a file turns out not UTF-8)."""
        if self.path is None:
            yield from split_pieces(self.text)[0]
            return
        yield from _stream_pieces(_read_chunks(self.path))


@dataclass(frozen=True)
class Source:
    """Where a run of documents comes from (one file, or one built-in collection); skipped as a whole if not UTF-8."""

    name: str
    documents: Callable[[], Iterator[Document]]


@dataclass
class Corpus:
    """A named, re-iterable stream of documents, grouped by source."""

    spec: str
    _sources: Callable[[], Iterator[Source]] = field(repr=False)

    def sources(self) -> Iterator[Source]:
        return self._sources()

    def __iter__(self) -> Iterator[Document]:
        """Every document of every source (a source that is not UTF-8 raises NotUtf8 here; the packer skips it)."""
        for src in self.sources():
            yield from src.documents()

    @classmethod
    def of(cls, spec: str, docs: list[Document]) -> Corpus:
        """A corpus of documents already in memory, as one source."""
        return cls(spec, lambda: iter([Source(spec, lambda: iter(docs))]))


def _read_chunks(path: Path) -> Iterator[str]:
    """The file's text, READ_CHARS characters at a time (universal newlines, as `Path.read_text`)."""
    try:
        with path.open(encoding="utf-8") as fh:
            while chunk := fh.read(READ_CHARS):
                yield chunk
    except UnicodeDecodeError as err:
        raise NotUtf8(str(path)) from err
    except OSError as err:
        raise UserError(f"--corpus: cannot read {path} ({err.strerror})") from err


def _stream_pieces(chunks: Iterable[str]) -> Iterator[str]:
    rest = ""
    for chunk in chunks:
        pieces, rest = split_pieces(rest + chunk, final=False)
        yield from pieces
    yield from split_pieces(rest)[0]


def _stream_paragraphs(chunks: Iterable[str]) -> Iterator[str]:
    """The same parts as `text.split("\n\n")` of the whole text, read chunk by chunk; over-long parts are cut."""
    carry = ""
    for chunk in chunks:
        parts = (carry + chunk).split("\n\n")
        carry = parts.pop()
        yield from parts
        if len(carry) > MAX_PIECE_CHARS:  # one paragraph the size of a book: cut it so memory stays bounded
            pieces, carry = split_pieces(carry, final=False)
            yield from pieces
    yield carry


def _group_paragraphs(
    paragraphs: Iterable[str], source: str, min_chars: int = MIN_DOC_CHARS
) -> Iterator[Document]:
    """Merge consecutive non-blank paragraphs (stripped) until each document has `min_chars` characters."""
    n = 0
    buf: list[str] = []
    for para in paragraphs:
        para = para.strip()
        if not para:
            continue
        buf.append(para)
        if sum(len(p) for p in buf) >= min_chars:
            yield Document("\n\n".join(buf), f"{source}#{n}")
            n += 1
            buf = []
    if buf and sum(len(p) for p in buf) >= min_chars // 2:
        yield Document("\n\n".join(buf), f"{source}#{n}")


def _docstrings(root: Path, prefix: str, skip_dirs: set[str]) -> Iterator[Document]:
    """Docstrings of at least MIN_DOC_CHARS characters from the `.py` files under `root`, parsed with ast (never
    imported), in sorted path order; each document's source is `PREFIX:RELATIVE/PATH.py:NAME`."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few files are deliberately broken (encoding tests, templates); they hold no prose
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_DOC_CHARS:
                        where = getattr(node, "name", "<module>")
                        yield Document(doc, f"{prefix}:{rel}:{where}")


def _stdlib_docstrings() -> list[Document]:
    """Docstrings of at least MIN_DOC_CHARS characters from the standard library's sources."""
    return list(_docstrings(Path(sysconfig.get_paths()["stdlib"]), "stdlib", _SKIP_DIRS))


def default_corpus() -> Corpus:
    """The embedded default corpus (pydoc topics + stdlib docstrings)."""
    from pydoc_data.topics import topics

    docs: list[Document] = []
    for name in sorted(topics):
        docs.extend(_group_paragraphs(topics[name].split("\n\n"), f"pydoc:{name}"))
    docs.extend(_stdlib_docstrings())
    return Corpus.of("default", docs)


def installed_packages() -> list[tuple[str, str, Path]]:
    """(import name, version, folder) of the PACKAGES that are installed, in PACKAGES' order."""
    found = []
    for name, dist in PACKAGES:
        spec = importlib.util.find_spec(name)  # finds the folder without importing the package
        if spec is None or not spec.submodule_search_locations:
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        found.append((name, version, Path(next(iter(spec.submodule_search_locations)))))
    return found


def _round_robin(streams: list[Iterator[Document]]) -> Iterator[Document]:
    """One document from each stream in turn, so every prefix of the corpus mixes all packages."""
    live = list(streams)
    while live:
        for stream in list(live):
            doc = next(stream, None)
            if doc is None:
                live.remove(stream)
            else:
                yield doc


def packages_corpus() -> Corpus:
    """`default+packages`: the default corpus, then the docstrings of the installed PACKAGES, interleaved.

    Deterministic for a given set of installed versions (files in sorted order, packages in a fixed order, one document
    from each in turn); the cache's corpus fingerprint covers the text, so two installs with different versions give
    caches that say they differ. Files are parsed lazily, so `--max-tokens` reads only what it needs.
    """
    packages = installed_packages()
    if not packages:
        raise UserError(f"--corpus {PACKAGES_SPEC}: none of {', '.join(d for _, d in PACKAGES)} is installed")
    log.info("corpus %s: %s", PACKAGES_SPEC, ", ".join(f"{n} {v}" for n, v, _ in packages))
    base = default_corpus()

    def sources() -> Iterator[Source]:
        yield from base.sources()
        streams = [_docstrings(root, name, _SKIP_DIRS | _SKIP_PACKAGE_DIRS) for name, _, root in packages]
        yield Source("packages", lambda: _round_robin(streams))

    return Corpus(PACKAGES_SPEC, sources)


def _jsonl_lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as fh:
            yield from fh
    except UnicodeDecodeError as err:
        raise NotUtf8(str(path)) from err
    except OSError as err:
        raise UserError(f"--corpus: cannot read {path} ({err.strerror})") from err


def _jsonl(path: Path, text_field: str) -> Iterator[Document]:
    for lineno, line in enumerate(_jsonl_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"--corpus: {path}:{lineno} is not valid JSON ({err.msg})") from err
        except RecursionError as err:
            raise UserError(f"--corpus: {path}:{lineno} is JSON nested too deeply") from err
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
            f"--corpus: {spec} is not 'default', '{PACKAGES_SPEC}', a file, a folder, a glob that matches files, or hf:NAME"
        )
    return matches


def load_corpus(spec: str, *, text_field: str = "text", split: str = "file") -> Corpus:
    """Resolve a corpus spec into documents. `split` is `file` (one document per file) or `paragraphs`."""
    if split not in ("file", "paragraphs"):
        raise UserError(f"--split: {split!r} is not 'file' or 'paragraphs'")
    if spec == "default":
        return default_corpus()
    if spec == PACKAGES_SPEC:
        return packages_corpus()
    if spec.startswith("hf:"):
        return Corpus.of(spec, _hf(spec, text_field))
    files = _files(spec)  # listed now, so a bad spec fails before the model runs; read lazily, in order

    def documents(path: Path) -> Iterator[Document]:
        if path.suffix == ".jsonl":
            return _jsonl(path, text_field)
        if split == "paragraphs":
            return _group_paragraphs(_stream_paragraphs(_read_chunks(path)), str(path))
        return iter([Document("", str(path), path=path, drop_if_blank=True)])

    return Corpus(spec, lambda: (Source(str(p), lambda p=p: documents(p)) for p in files))
