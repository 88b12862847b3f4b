"""Tokenising a corpus and packing it, deterministically, into fixed-length sequences with a document id per token.

Documents are concatenated in corpus order and cut into sequences of `context_size` tokens. Each sequence starts
with the tokenizer's CLS (or BOS) token and ends with its SEP token where the tokenizer has them, so an encoder sees
inputs shaped like its training data. Special tokens and the padding of the last sequence are marked in the mask
(their norms are outliers, and they carry no text to label).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from activations.corpus import Corpus
from activations.errors import UserError


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


def pack_corpus(corpus: Corpus, tokenizer, context_size: int, max_tokens: int | None = None) -> PackedCorpus:
    """Tokenise `corpus` and pack it into sequences of `context_size` tokens (at most `max_tokens` tokens in all)."""
    prefix, suffix, pad = _special_ids(tokenizer)
    body = context_size - len(prefix) - len(suffix)
    if body < 1:
        raise UserError(f"--context-size: {context_size} leaves no room for text next to the special tokens")
    budget = max_tokens if max_tokens is not None else np.iinfo(np.int64).max
    content: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    places: list[np.ndarray] = []
    total = 0
    n_docs = 0
    batch: list[str] = []
    docs = list(corpus)

    def flush(start_doc: int) -> int:
        nonlocal total
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for j, ids in enumerate(encoded):
            if total >= budget:
                break
            ids = np.asarray(ids[: int(budget - total)], dtype=np.int32)
            if len(ids) == 0:
                continue
            content.append(ids)
            owners.append(np.full(len(ids), start_doc + j, dtype=np.int32))
            places.append(np.arange(len(ids), dtype=np.int32))
            total += len(ids)
        return len(encoded)

    start = 0
    with tqdm(total=len(docs), desc="tokenising", unit="doc", leave=False) as bar:
        for i, doc in enumerate(docs):
            batch.append(doc.text)
            if len(batch) == 256 or i == len(docs) - 1:
                start += flush(start)
                bar.update(len(batch))
                batch = []
                if total >= budget:
                    break
    if total == 0:
        raise UserError(f"--corpus: {corpus.spec} yields no tokens")
    flat = np.concatenate(content)
    owner = np.concatenate(owners)
    place = np.concatenate(places)
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
