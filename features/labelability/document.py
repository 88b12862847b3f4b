"""The document describer: does the latent fire throughout documents of some kind, told by their text?

A window is described by its *whole document's* text, never by the document's id: a document is a contiguous run
of one doc id in the flat token stream (it may span sequences), and its row is the TF-IDF of its unmasked tokens
(sublinear term frequency, log(1 + count); smoothed idf over the train documents; rows L2-normalised). The
describer is a Rocchio (nearest-centroid) fit on the train windows: the score of a window is the dot product of
its document's row with (mean row of the train positives - mean row of the train negatives), so test documents
are scored by how much their text resembles that of the train documents where the latent fires. The readable form
lists the terms with the largest weights ("documents with 'pip', 'install', ..."). Test documents are never seen
in the fit: the split is by document; the train windows' own scores (for compositions) leave their document out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.registry import Description, LatentSample, PassData, auroc_column
from features.labelability.windows import CacheIndex


@dataclass(frozen=True)
class DocumentState:
    """Pass-wide document rows."""

    segment: np.ndarray
    """(T,) int64 document (contiguous run of one doc id) of each flat position; -1 on padding (doc id < 0)."""
    rows: sp.csr_matrix
    """(n_documents, V) L2-normalised TF-IDF of each document's unmasked tokens."""


def document_segments(doc: np.ndarray) -> np.ndarray:
    """(T,) segment number of each flat position: a new segment wherever the doc id changes; -1 where doc < 0."""
    if len(doc) == 0:
        return np.zeros(0, np.int64)
    change = np.r_[True, doc[1:] != doc[:-1]]
    seg = np.cumsum(change) - 1
    return np.where(doc >= 0, seg, -1)


def document_state(index: CacheIndex, vocab_size: int) -> DocumentState:
    """Every document's TF-IDF row (idf over the train documents), built once per pass; uses no labels."""
    seg = document_segments(index.doc)
    n_seg = int(seg.max(initial=-1)) + 1
    v = index.valid_idx[seg[index.valid_idx] >= 0]
    counts = sp.csr_matrix(
        (np.ones(len(v)), (seg[v], index.tokens[v])), shape=(n_seg, vocab_size)
    )  # duplicates sum
    counts.sum_duplicates()
    tf = counts.copy()
    tf.data = np.log1p(tf.data)
    train_seg = np.zeros(n_seg, bool)
    train_seg[seg[v[~index.is_test[v]]]] = True
    df = np.bincount(counts[train_seg].indices, minlength=vocab_size)
    idf = np.log((1.0 + train_seg.sum()) / (1.0 + df)) + 1.0  # sklearn's smoothed idf, over train documents
    x = sp.csr_matrix(tf.multiply(idf[None, :]))
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return DocumentState(seg, sp.csr_matrix(sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x))


def rocchio_weights(x: sp.csr_matrix, train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(V,) mean row of the train positives minus the mean row of the train negatives."""
    pos, neg = train & y, train & ~y
    w = np.zeros(x.shape[1])
    if pos.any():
        w += np.asarray(x[pos].mean(axis=0)).ravel()
    if neg.any():
        w -= np.asarray(x[neg].mean(axis=0)).ravel()
    return w


def rocchio_scores(x: sp.csr_matrix, doc: np.ndarray, train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) scores of every window: test windows by the Rocchio weights of all train windows; a train window by
    the weights of the train windows of *other* documents (leave one document out), so train scores are as honest
    as test scores (a document's own windows would otherwise pull its score up). `doc` (n,) is each window's
    document; windows of one document share its row, so the correction needs only per-document counts."""
    pos, neg = train & y, train & ~y
    s_pos = np.asarray(x[pos].sum(axis=0)).ravel()
    s_neg = np.asarray(x[neg].sum(axis=0)).ravel()
    dot_pos, dot_neg = np.asarray(x @ s_pos).ravel(), np.asarray(x @ s_neg).ravel()
    n_pos, n_neg = pos.sum(), neg.sum()
    scores = dot_pos / max(n_pos, 1) - dot_neg / max(n_neg, 1)
    _, d = np.unique(doc, return_inverse=True)
    own_pos, own_neg = (
        np.bincount(d[pos], minlength=d.max(initial=0) + 1),
        np.bincount(d[neg], minlength=d.max(initial=0) + 1),
    )
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()  # |row|^2: 1, or 0 for a document without tokens
    k_pos, k_neg = own_pos[d[train]], own_neg[d[train]]
    with np.errstate(invalid="ignore", divide="ignore"):
        lodo_pos = np.where(n_pos > k_pos, (dot_pos[train] - k_pos * sq[train]) / (n_pos - k_pos), 0.0)
        lodo_neg = np.where(n_neg > k_neg, (dot_neg[train] - k_neg * sq[train]) / (n_neg - k_neg), 0.0)
    scores[train] = lodo_pos - lodo_neg
    return scores


def top_terms(w: np.ndarray, k: int) -> np.ndarray:
    """Term ids of the k largest positive weights."""
    order = np.argsort(-w, kind="stable")[:k]
    return order[w[order] > 0]


def document_readable(w: np.ndarray, vocab: list[str], k: int) -> str:
    terms = top_terms(w, k)
    if len(terms) == 0:
        return "no term marks the documents where it fires"
    return "documents with " + ", ".join(f"{vocab[t]!r}" for t in terms)


def youden_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The score threshold (fire at >= it) maximising TPR - FPR on the given windows."""
    uniq = np.unique(scores)
    if len(uniq) < 2 or y.all() or not y.any():
        return float(uniq[0]) if len(uniq) else 0.0
    tpr = np.array([(scores[y] >= t).mean() for t in uniq])
    fpr = np.array([(scores[~y] >= t).mean() for t in uniq])
    return float(uniq[int(np.argmax(tpr - fpr))])


class DocumentDescriber:
    """Nearest centroid of the train windows' documents, by TF-IDF of each whole document's text."""

    name = "document"
    tie_order = 5
    summary = "the window's whole document resembles (TF-IDF) the documents where it fires"
    cheap = False

    def prepare(self, data: PassData) -> DocumentState:
        return document_state(data.index, len(data.vocab))

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        doc = state.segment[sample.centre]
        x = state.rows[doc]
        tr = sample.train
        w = rocchio_weights(x, tr, sample.label)
        scores = rocchio_scores(x, doc, tr, sample.label)
        return Description(
            test_scores=scores[~tr],
            readable=document_readable(w, data.vocab, data.cfg.document_top_terms),
            train_scores=scores[tr],
        )

    def window_features(
        self,
        sample: LatentSample,
        data: PassData,
        state: Any,  # noqa: ANN401
    ) -> tuple[sp.csr_matrix, list[str]]:
        """`doc like {t1, t2, t3}`: the Rocchio score at or above the threshold that best separates the train
        windows (their scores left their own document out); then `doc has 't'` for each of the top terms. Fit on the
        train windows only."""
        doc = state.segment[sample.centre]
        x = state.rows[doc]
        tr, y = sample.train, sample.label
        w = rocchio_weights(x, tr, y)
        scores = rocchio_scores(x, doc, tr, y)
        like = (scores >= youden_threshold(scores[tr], y[tr])).astype(np.float64)
        terms = top_terms(w, data.cfg.document_top_terms)
        has = (x[:, terms] > 0).astype(np.float64)
        shown = ", ".join(data.vocab[t] for t in terms[:3])
        names = [f"doc like {{{shown}}}"] + [f"doc has {data.vocab[t]!r}" for t in terms]
        return sp.csr_matrix(sp.hstack([sp.csr_matrix(like[:, None]), has])), names

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = DocumentDescriber()
