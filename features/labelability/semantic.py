"""The semantic describer: cosine of a window to its k nearest train positives minus its k nearest train negatives
("windows like these fire"), in the space `[labelability] semantic_backend` names.

"tfidf" (the default, and the cheap fallback) compares the windows' tokens by TF-IDF: it sees shared words only, so
"copy the file to the destination path" and "duplicate it into the target folder" are strangers. "minilm" (or a
local sentence-transformers folder) compares sentence embeddings of the windows' text (`embedding`), which put
those two side by side. Each distinct window is embedded once per pass (`embedding.WindowEmbeddings`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from features.columns import Column
from features.labelability.embedding import WindowEmbeddings, embeddings_state
from features.labelability.registry import Description, LatentSample, PassData, auroc_column


def _tfidf(windows: np.ndarray, vocab_size: int, idf: np.ndarray | None) -> tuple[sp.csr_matrix, np.ndarray]:
    """L2-normalised TF-IDF rows of window tokens; the idf is fit when not given."""
    n, w = windows.shape
    rows = np.repeat(np.arange(n), w)
    tok = windows.ravel()
    ok = tok >= 0
    x = sp.csr_matrix((np.ones(ok.sum()), (rows[ok], tok[ok])), shape=(n, vocab_size))
    x.sum_duplicates()
    if idf is None:
        df = np.bincount(x.indices, minlength=vocab_size)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0  # sklearn's smoothed idf
    x = sp.csr_matrix(x.multiply(idf[None, :]))
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x), idf


def _mean_top_k(sim: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row's k largest entries (all entries when fewer)."""
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    k = min(k, sim.shape[1])
    return np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def neighbour_scores(sim: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Mean similarity to the k nearest train positives minus to the k nearest train negatives, per row of `sim`
    (n, n_train)."""
    return _mean_top_k(sim[:, y], k) - _mean_top_k(sim[:, ~y], k)


def semantic_scores(
    train_win: np.ndarray, y: np.ndarray, test_win: np.ndarray, vocab_size: int, k: int
) -> np.ndarray:
    """Mean cosine to the k nearest train positives minus to the k nearest train negatives, per test window."""
    x_tr, idf = _tfidf(train_win, vocab_size, None)
    x_te, _ = _tfidf(test_win, vocab_size, idf)
    sim = (x_te @ x_tr.T).toarray()  # (n_test, n_train)
    return neighbour_scores(sim, y, k)


def embedding_fit(emb: np.ndarray, train: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """(test scores, index of the most typical train positive) from L2-normalised window embeddings (n, d).

    The typical positive is the train positive that its own neighbour score (itself left out) ranks highest: the
    window a person should read first.
    """
    e_tr, e_te = emb[train], emb[~train]
    scores = neighbour_scores(e_te @ e_tr.T, y, k)
    pos = np.flatnonzero(y)
    sim = e_tr[pos] @ e_tr.T  # (n_pos, n_train)
    sim[np.arange(len(pos)), pos] = -1.0  # not its own neighbour (-1: the least a cosine can be)
    own = neighbour_scores(sim, y, k)
    typical = int(np.flatnonzero(train)[pos[int(np.argmax(own))]]) if len(pos) else -1
    return scores, typical


class SemanticDescriber:
    """Nearest train windows by a sentence embedding of their text, or by TF-IDF of their tokens."""

    name = "semantic"
    tie_order = 2
    summary = "nearest train windows by sentence embedding (semantic_backend) or TF-IDF"
    cheap = False

    def prepare(self, data: PassData) -> WindowEmbeddings | None:
        return embeddings_state(data.cfg.semantic_backend, data.cfg.semantic_batch, data.vocab)

    def describe(self, sample: LatentSample, data: PassData, state: Any) -> Description:  # noqa: ANN401
        tr, win = sample.train, sample.windows
        if isinstance(state, WindowEmbeddings):
            emb = state.get(sample.centre, win)
            scores, typical = embedding_fit(emb, tr, sample.label[tr], data.cfg.semantic_k)
            like = f": {state.text(win, typical)[-160:]!r}" if typical >= 0 else ""
            return Description(
                test_scores=scores, readable=f"windows like this ({state.embedder.label}){like}"
            )
        scores = semantic_scores(win[tr], sample.label[tr], win[~tr], len(data.vocab), data.cfg.semantic_k)
        return Description(test_scores=scores, readable="nearest positive windows (TF-IDF of window tokens)")

    def columns(self) -> list[Column]:
        return [auroc_column(self)]


DESCRIBER = SemanticDescriber()
