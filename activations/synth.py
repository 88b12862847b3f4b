"""Synthetic activation caches with planted ground truth, to measure recovery and flagging against known answers.

`generate_synthetic(path, cfg)` writes a normal cache file (readable by `ActivationCache.open`, source "synthetic")
whose activations are a sparse sum of planted unit directions, more of them than dimensions (superposition), plus
isotropic Gaussian noise:

    x[token] = sum_f a[token, f] * direction[f] + noise,   noise ~ N(0, noise_std^2 I)

Beside it go `<path>.truth.safetensors` (directions (F, d) float32 and the per-token activations a as CSR arrays)
and `<path>.truth.json` (kinds, names, frequencies, support, the config, the format version). The planted kinds:

- TOKEN: fires exactly when the current token is in a small token set (labelable by construction);
- HASH: fires when a salted hash of the last `hash_window` tokens falls below the feature's frequency (well
  defined, but no short description of tokens predicts it);
- HIDDEN: fires while a per-document two-state Markov chain, independent of the tokens, is on (unlabelable);
- DENSE_PAIR: one direction with both signs, each side on `dense_density` of tokens (two columns, +d and -d);
- CIRCLE: two orthonormal directions with values r * (cos t, sin t), t fixed per token of a small cyclic token set
  (like days of the week), signed;
- NOISE: the Gaussian noise added to every token; a constant of the config, not a column of the truth.

Truth file layout (format "xenofeat.synthetic-truth" 1.0). `<path>.truth.safetensors`: `directions` (F, d) float32
unit rows; `act_indptr` (n_seq * L + 1,) int64, `act_indices` (nnz,) int32 and `act_values` (nnz,) float32, the CSR
arrays of the (n_seq * L, F) truth with row = seq * L + position; `cls_vector` (d,) float32. `<path>.truth.json`:
`format`, `format_version`, `config` (every SynthConfig field), `hook`, `n_rows`, `n_features`, `planted_l0`,
`noise_std`, `counts` (columns per kind), and `features`: one object per column with `index`, `kind`, `name`,
`labelable`, `n_firing`, `n_docs`, `frequency` (over unmasked tokens), `scale`, and per kind `target_freq`,
`token_set`, `angles`, `window`, `salt`, `run_length`, `partner`.

Each sequence starts with a [CLS] token (an outlier vector of norm `special_norm`, no features) and the last one
ends in [PAD] rows (zero vectors); both are marked in the cache mask and have empty truth rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from activations.errors import UserError
from activations.overwrite import check_replace_cache

TOKEN = "token"
HASH = "hash"
HIDDEN = "hidden"
DENSE_PAIR = "dense_pair"
CIRCLE = "circle"
NOISE = "noise"
KINDS = (TOKEN, HASH, HIDDEN, DENSE_PAIR, CIRCLE)  # kinds that are columns of the truth (NOISE is not)
LABELABLE_KINDS = (
    TOKEN,
    CIRCLE,
)  # determined by the current token; the others are unlabelable by construction

HOOK = "synthetic.hook_x"
TRUTH_FORMAT = "xenofeat.synthetic-truth"
TRUTH_VERSION = "1.0"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic cache; the same config (seed included) gives the same files."""

    d_model: int = 64
    """Dimension of the activation vectors."""
    n_seq: int = 4000
    """Number of cache sequences (rows of the cache); tokens = n_seq * context_size."""
    context_size: int = 64
    """Tokens per sequence, the [CLS] token at position 0 included."""
    vocab_size: int = 1000
    """Vocabulary size, the two special tokens [CLS] (id 0) and [PAD] (id 1) included."""
    token_zipf_exponent: float = 1.0
    """Exponent s of the Zipf-Mandelbrot token distribution p(rank) ~ 1 / (rank + offset) ** s."""
    token_zipf_offset: float = 2.7
    """Offset of the Zipf-Mandelbrot token distribution (2.7 as fitted to English; flattens the head)."""
    doc_len_mean: int = 200
    """Mean document length in tokens (geometric lengths); documents run across sequence boundaries."""
    doc_len_min: int = 16
    """Shortest document, in tokens."""
    n_token: int = 48
    """Features that fire exactly on a small planted set of current tokens."""
    token_set_max: int = 3
    """Each token feature fires on 1 .. token_set_max distinct token ids (sets of different features are disjoint)."""
    n_hash: int = 56
    """Features that fire when a salted hash of the last `hash_window` tokens falls in a range."""
    hash_window: int = 3
    """Tokens (the current one included) that the hash features hash."""
    n_hidden: int = 56
    """Features driven by a hidden per-document Markov state that does not influence the tokens."""
    hidden_run_length: float = 6.0
    """Mean length, in tokens, of a hidden feature's bursts (runs of the on state)."""
    n_dense_pair: int = 1
    """Dense antipodal pairs: one direction, firing with + sign on some tokens and - sign on others."""
    dense_density: float = 0.12
    """Fraction of tokens on which each side of a dense pair fires (so both sides are dense, > 0.1)."""
    n_circle: int = 1
    """Planted circles: two orthonormal directions with values r (cos t, sin t) on a cyclic token set."""
    circle_points: int = 7
    """Tokens on each circle, at equally spaced angles (like the days of the week)."""
    circle_freq: float = 0.03
    """Target fraction of tokens on which a circle fires (the summed frequency of its tokens)."""
    freq_max: float = 0.08
    """Firing frequency of the most frequent token/hash/hidden feature (Zipf-like ranks from max to min)."""
    freq_min: float = 0.005
    """Firing frequency of the rarest token/hash/hidden feature."""
    magnitude_mean: float = 1.0
    """Mean of the normal whose absolute value gives each firing's magnitude."""
    magnitude_std: float = 0.25
    """Standard deviation of that normal."""
    scale_min: float = 0.75
    """Each feature's magnitudes are scaled by a factor drawn uniformly from [scale_min, scale_max]."""
    scale_max: float = 1.5
    """Upper end of the per-feature scale."""
    noise_std: float = 0.05
    """Standard deviation, per dimension, of the isotropic Gaussian noise added to every token but padding."""
    special_norm: float = 8.0
    """Norm of the [CLS] vector (an outlier, like real special tokens; masked)."""
    seed: int = 0
    """Seed of every random choice (directions, tokens, firings, magnitudes, noise, hash salts)."""
    dtype: str = "float16"
    """Storage dtype of the cache's activations: float16 or float32."""

    def __post_init__(self) -> None:
        positive_ints = ("d_model", "n_seq", "vocab_size", "doc_len_mean", "doc_len_min", "token_set_max")
        positive_ints += ("hash_window", "circle_points")
        for name in positive_ints:
            _check(
                name, isinstance(getattr(self, name), int) and getattr(self, name) >= 1, "a positive integer"
            )
        for name in ("n_token", "n_hash", "n_hidden", "n_dense_pair", "n_circle"):
            _check(name, isinstance(getattr(self, name), int) and getattr(self, name) >= 0, "an integer >= 0")
        _check(
            "context_size", isinstance(self.context_size, int) and self.context_size >= 4, "an integer >= 4"
        )
        _check("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0")
        _check("dtype", self.dtype in ("float16", "float32"), "float16 or float32")
        _check(
            "n_token", self.n_features >= 1, "such that at least one feature is planted (all counts are 0)"
        )
        _check("doc_len_min", self.doc_len_min <= self.doc_len_mean, "<= doc_len_mean")
        _check("freq_max", 0 < self.freq_max <= 0.5, "in (0, 0.5]")
        _check("freq_min", 0 < self.freq_min <= self.freq_max, "in (0, freq_max]")
        _check("dense_density", 0 < self.dense_density <= 0.5, "in (0, 0.5]")
        _check("circle_freq", 0 < self.circle_freq <= 0.5, "in (0, 0.5]")
        _check("circle_points", self.circle_points >= 3, ">= 3")
        _check("hidden_run_length", self.hidden_run_length >= 1, ">= 1")
        _check("token_zipf_exponent", self.token_zipf_exponent > 0, "> 0")
        _check("token_zipf_offset", self.token_zipf_offset >= 0, ">= 0")
        _check("magnitude_mean", self.magnitude_mean > 0, "> 0")
        _check("magnitude_std", self.magnitude_std >= 0, ">= 0")
        _check("scale_min", 0 < self.scale_min <= self.scale_max, "in (0, scale_max]")
        _check("noise_std", self.noise_std >= 0, ">= 0")
        _check("special_norm", self.special_norm >= 0, ">= 0")
        _check("d_model", self.d_model >= 2 or self.n_circle == 0, ">= 2 for a circle")
        needed = self.n_token * self.token_set_max + self.n_circle * self.circle_points
        _check(
            "vocab_size",
            self.vocab_size - 2 >= needed,
            f"large enough for the planted token sets ({needed} + 2)",
        )

    @property
    def n_features(self) -> int:
        """Columns of the truth: one per token/hash/hidden feature, two per dense pair and per circle."""
        return self.n_token + self.n_hash + self.n_hidden + 2 * self.n_dense_pair + 2 * self.n_circle

    @property
    def n_rows(self) -> int:
        """Token rows of the cache, masked ones included."""
        return self.n_seq * self.context_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: unknown SynthConfig field(s)")
        return cls(**d)


def _check(name: str, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {what}")


@dataclass(frozen=True)
class SynthTruth:
    """The planted ground truth of a synthetic cache (what `load_truth` returns)."""

    cache_path: Path
    config: SynthConfig
    directions: np.ndarray  # (F, d) float32 unit rows (a dense pair's rows are +d and -d)
    kinds: list[str]  # (F,) kind of each column
    names: list[str]  # (F,) unique names, e.g. "token3", "dense0-", "circle0.sin"
    features: list[dict[str, Any]]  # (F,) per-column facts: frequency, support, token set, scale, ...
    planted_l0: float  # mean number of non-zero truth columns per unmasked token
    indptr: np.ndarray  # (n_rows + 1,) int64 CSR of the truth activations
    indices: np.ndarray  # (nnz,) int32
    values: np.ndarray  # (nnz,) float32

    @property
    def n_features(self) -> int:
        return len(self.kinds)

    @property
    def labelable(self) -> np.ndarray:
        """(F,) bool: True for the kinds a description of the current token predicts."""
        return np.array([k in LABELABLE_KINDS for k in self.kinds], dtype=bool)

    @property
    def frequencies(self) -> np.ndarray:
        """(F,) float64 fraction of unmasked tokens on which each column is non-zero."""
        return np.array([f["frequency"] for f in self.features], dtype=np.float64)

    def indices_of(self, kind: str) -> np.ndarray:
        """Column indices of one kind."""
        return np.array([i for i, k in enumerate(self.kinds) if k == kind], dtype=np.int64)

    def activations(self) -> sp.csr_matrix:
        """(n_seq * L, F) per-token truth; row = seq * L + position, masked rows empty."""
        shape = (len(self.indptr) - 1, self.n_features)
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=shape)


def truth_paths(cache_path: str | Path) -> tuple[Path, Path]:
    """The truth files beside a cache: (<path>.truth.safetensors, <path>.truth.json)."""
    p = Path(cache_path)
    return p.with_name(p.name + ".truth.safetensors"), p.with_name(p.name + ".truth.json")


def load_truth(cache_path: str | Path) -> SynthTruth:
    """Read the planted truth written beside a synthetic cache."""
    st_path, js_path = truth_paths(cache_path)
    for p in (st_path, js_path):
        if not p.exists():
            raise UserError(f"{p}: no planted truth beside {cache_path} (not a synthetic cache?)")
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
        arrays = load_file(str(st_path))
    except (OSError, ValueError) as err:
        raise UserError(f"{js_path}: cannot read the planted truth ({err})") from err
    if meta.get("format") != TRUTH_FORMAT or meta.get("format_version") != TRUTH_VERSION:
        raise UserError(f"{js_path}: not a synthetic truth file of version {TRUTH_VERSION}")
    feats = meta["features"]
    return SynthTruth(
        cache_path=Path(cache_path),
        config=SynthConfig.from_dict(meta["config"]),
        directions=arrays["directions"],
        kinds=[f["kind"] for f in feats],
        names=[f["name"] for f in feats],
        features=feats,
        planted_l0=float(meta["planted_l0"]),
        indptr=arrays["act_indptr"],
        indices=arrays["act_indices"],
        values=arrays["act_values"],
    )


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def generate_synthetic(path: str | Path, cfg: SynthConfig, *, overwrite: bool = False) -> SynthTruth:
    """Write a synthetic cache at `path` and its planted truth beside it; return the truth."""
    from activations.synth_write import build_arrays, write_cache

    path = Path(path)
    st_path, js_path = truth_paths(path)
    if not overwrite:
        for p in (path, st_path, js_path):
            if p.exists():
                raise UserError(f"{p}: already exists; pass --overwrite to replace it")
    elif path.exists() or path.is_symlink():
        check_replace_cache(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist")
    built = build_arrays(cfg)
    model_fp = hashlib.sha256(built.directions.tobytes() + json.dumps(cfg.to_dict()).encode()).hexdigest()
    meta = {
        "format": TRUTH_FORMAT,
        "format_version": TRUTH_VERSION,
        "config": cfg.to_dict(),
        "hook": HOOK,
        "n_rows": cfg.n_rows,
        "n_features": len(built.features),
        "planted_l0": built.planted_l0,
        "noise_std": cfg.noise_std,
        "counts": {k: sum(f["kind"] == k for f in built.features) for k in KINDS},
        "features": built.features,
    }
    tensors = {
        "directions": built.directions,
        "act_indptr": built.truth.indptr.astype(np.int64),
        "act_indices": built.truth.indices.astype(np.int32),
        "act_values": built.truth.data.astype(np.float32),
        "cls_vector": built.cls_vector,
    }

    def write_truth() -> None:
        # written before the cache's complete flag: a complete synthetic cache always has its truth beside it
        _atomic_write(st_path, lambda p: save_file(tensors, str(p)))
        _atomic_write(js_path, lambda p: p.write_text(json.dumps(meta, indent=1), encoding="utf-8"))

    write_cache(path, cfg, built, model_fingerprint=model_fp, before_finish=write_truth)
    return load_truth(path)
