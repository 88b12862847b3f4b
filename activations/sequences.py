"""Tokenising a corpus and packing it, deterministically, into fixed-length sequences with a document id per token.

Documents are concatenated in corpus order and cut into sequences of `context_size` tokens. They are read and
tokenised piece by piece (corpus.py bounds the pieces), in batches of bounded size, and reading stops as soon as
`max_tokens` tokens are in hand, so memory follows the tokens kept, not the size of the files. Each sequence starts
with the tokenizer's CLS (or BOS) token and ends with its SEP token where the tokenizer has them, so an encoder sees
inputs shaped like its training data. Special tokens and the padding of the last sequence are marked in the mask
(their norms are outliers, and they carry no text to label).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from activations.corpus import Corpus, Document, NotUtf8
from activations.errors import UserError

log = logging.getLogger(__name__)

BATCH_PIECES = 256  # pieces per tokenizer call ...
BATCH_CHARS = (
    1_000_000  # ... and at most about this many characters (a fast tokenizer holds ~70 bytes per char)
)


@dataclass(frozen=True)
class PackedCorpus:
    """All sequences of a corpus, ready to feed the model."""

    tokens: np.ndarray  # (n_seq, L) int32
    doc_ids: np.ndarray  # (n_seq, L) int32; the document of each token (-1 on padding)
    positions: (
        np.ndarray
    )  # (n_seq, L) int32; position of each token within its document (-1 on special/padding)
    mask: np.ndarray  # (n_seq, L) bool; True = special token or padding
    attention: np.ndarray  # (n_seq, L) bool; False only on padding
    n_documents: int

    @property
    def fingerprint(self) -> str:
        """sha256 of the token ids and document ids: identifies exactly what the cache is computed from."""
        h = hashlib.sha256()
        for arr in (self.tokens, self.doc_ids):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _special_ids(tokenizer) -> tuple[list[int], list[int], int]:
    prefix = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    suffix = tokenizer.sep_token_id
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return ([prefix] if prefix is not None else []), ([suffix] if suffix is not None else []), int(pad)


@dataclass
class _Tokens:
    """Token ids of a corpus as they are read: one entry per tokenised piece, with its document and positions.

    Pieces wait in `pending` until a batch is full; `rollback` forgets the last documents (a file that turns out not
    to be UTF-8, a document that turns out blank), which always sit at the end of both lists.
    """

    tokenizer: object
    budget: int
    content: list[np.ndarray] = field(default_factory=list)
    owners: list[np.ndarray] = field(default_factory=list)
    places: list[np.ndarray] = field(default_factory=list)
    pending: list[tuple[int, str]] = field(default_factory=list)  # (document id, piece)
    pending_chars: int = 0
    total: int = 0
    next_doc: int = 0
    last: tuple[int, int] = (-1, 0)  # (document id, tokens so far) of the last tokenised piece

    @property
    def full(self) -> bool:
        return self.total >= self.budget

    def rollback(self, first_doc: int) -> None:
        """Forget document `first_doc` and every later one, tokenised or pending; their ids are given out again."""
        while self.owners and self.owners[-1][0] >= first_doc:
            self.total -= len(self.content.pop())
            self.owners.pop()
            self.places.pop()
        while self.pending and self.pending[-1][0] >= first_doc:
            self.pending_chars -= len(self.pending.pop()[1])
        self.next_doc = first_doc
        self.last = (int(self.owners[-1][0]), int(self.places[-1][-1]) + 1) if self.owners else (-1, 0)

    def add(self, doc: int, piece: str) -> None:
        self.pending.append((doc, piece))
        self.pending_chars += len(piece)
        if len(self.pending) >= BATCH_PIECES or self.pending_chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        texts = [t for _, t in self.pending]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for (doc, _), ids in zip(self.pending, encoded, strict=True):
            if self.full:
                break
            ids = np.asarray(ids[: int(self.budget - self.total)], dtype=np.int32)
            if len(ids) == 0:
                continue
            start = self.last[1] if self.last[0] == doc else 0
            self.content.append(ids)
            self.owners.append(np.full(len(ids), doc, dtype=np.int32))
            self.places.append(np.arange(start, start + len(ids), dtype=np.int32))
            self.last = (doc, start + len(ids))
            self.total += len(ids)
        self.pending, self.pending_chars = [], 0


def _add_document(acc: _Tokens, doc: Document) -> None:
    """Queue a document's pieces under the next document id (none if it turns out blank and may be dropped)."""
    doc_id = acc.next_doc
    acc.next_doc += 1
    blank = True
    for piece in doc.pieces():
        blank = blank and not piece.strip()
        acc.add(doc_id, piece)
        if acc.full:
            return
    if blank and doc.drop_if_blank:
        acc.rollback(doc_id)


def read_tokens(corpus: Corpus, tokenizer, max_tokens: int | None, *, progress: bool = True) -> _Tokens:
    """Tokenise the corpus in order until `max_tokens` tokens (all of it when None); files not UTF-8 are skipped."""
    acc = _Tokens(tokenizer, max_tokens if max_tokens is not None else np.iinfo(np.int64).max)
    skipped = 0
    with tqdm(desc="tokenising", unit="doc", leave=False, disable=not progress) as bar:
        for src in corpus.sources():
            first = acc.next_doc
            try:
                for doc in src.documents():
                    _add_document(acc, doc)
                    bar.update(1)
                    if acc.full:
                        break
            except NotUtf8:
                acc.rollback(first)
                skipped += 1
            if acc.full:
                break
        acc.flush()
    if skipped:
        log.warning("--corpus: skipped %d file(s) that are not valid UTF-8", skipped)
    if acc.next_doc == 0:
        what = f" ({skipped} file(s) skipped as not UTF-8)" if skipped else ""
        raise UserError(f"--corpus: {corpus.spec} holds no text{what}")
    return acc


def pack_corpus(
    corpus: Corpus, tokenizer, context_size: int, max_tokens: int | None = None, *, progress: bool = True
) -> PackedCorpus:
    """Tokenise `corpus` and pack it into sequences of `context_size` tokens (at most `max_tokens` tokens in all)."""
    prefix, suffix, pad = _special_ids(tokenizer)
    body = context_size - len(prefix) - len(suffix)
    if body < 1:
        raise UserError(f"--context-size: {context_size} leaves no room for text next to the special tokens")
    acc = read_tokens(corpus, tokenizer, max_tokens, progress=progress)
    if acc.total == 0:
        raise UserError(f"--corpus: {corpus.spec} yields no tokens")
    flat = np.concatenate(acc.content)
    owner = np.concatenate(acc.owners)
    place = np.concatenate(acc.places)
    del acc
    n_docs = int(len(np.unique(owner)))
    n_seq = -(-len(flat) // body)
    padded = n_seq * body
    fill = padded - len(flat)
    flat = np.concatenate([flat, np.full(fill, pad, np.int32)]).reshape(n_seq, body)
    owner = np.concatenate([owner, np.full(fill, -1, np.int32)]).reshape(n_seq, body)
    place = np.concatenate([place, np.full(fill, -1, np.int32)]).reshape(n_seq, body)
    is_pad = np.zeros((n_seq, body), bool)
    if fill:
        is_pad[-1, body - fill :] = True

    def frame(x: np.ndarray, pre: list[int] | np.ndarray, post: list[int] | np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                np.broadcast_to(np.asarray(pre, x.dtype), (n_seq, len(prefix))),
                x,
                np.broadcast_to(np.asarray(post, x.dtype), (n_seq, len(suffix))),
            ],
            axis=1,
        )

    tokens = frame(flat, prefix, suffix)
    # special tokens belong to the document of their neighbour, so contexts can be shown around them
    doc_ids = frame(owner, owner[:, :1] if prefix else [], owner[:, -1:] if suffix else [])
    positions = frame(place, [-1] * len(prefix), [-1] * len(suffix))
    pad_mask = frame(is_pad, [False] * len(prefix), [False] * len(suffix))
    special = frame(np.zeros_like(is_pad), [True] * len(prefix), [True] * len(suffix))
    if fill and suffix:
        # the last sequence: SEP directly after the text, padding after it
        last_text = body - fill
        row = np.concatenate(
            [
                np.asarray(prefix, np.int32),
                flat[-1, :last_text],
                np.asarray(suffix, np.int32),
                np.full(fill, pad, np.int32),
            ]
        )
        tokens[-1] = row
        doc_ids[-1] = np.concatenate(
            [
                owner[-1, :1] if prefix else [],
                owner[-1, :last_text],
                owner[-1, last_text - 1 : last_text],
                np.full(fill, -1),
            ]
        ).astype(np.int32)
        positions[-1] = np.concatenate(
            [[-1] * len(prefix), place[-1, :last_text], [-1] * len(suffix), np.full(fill, -1)]
        ).astype(np.int32)
        special[-1] = False
        special[-1, : len(prefix)] = True
        special[-1, len(prefix) + last_text] = True
        pad_mask[-1] = False
        pad_mask[-1, len(prefix) + last_text + 1 :] = True
    doc_ids[pad_mask] = -1
    return PackedCorpus(
        tokens=tokens.astype(np.int32),
        doc_ids=doc_ids.astype(np.int32),
        positions=positions.astype(np.int32),
        mask=special | pad_mask,
        attention=~pad_mask,
        n_documents=n_docs,
    )
