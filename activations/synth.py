"""Synthetic activation caches with planted ground truth, to measure recovery and flagging against known answers.

`activations.synth_write.generate_synthetic(path, cfg)` writes a normal cache file (readable by `ActivationCache.open`, source "synthetic")
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
- POSITION: fires on every token at a band of `position_width` positions of the cache sequence (labelable by
  position, not by tokens);
- DOCUMENT: fires on every token of the documents a hidden per-document topic picks (`document_fraction` of them);
  the topic also puts its own `document_words` topic words in those documents (a share `document_shift` of their
  tokens is replaced), so a description of the document's text can predict it;
- ANCHORED: fires on one token only while a hidden per-document two-state Markov chain is on (token-anchored: the
  token labels it, but which of the token's occurrences fire resists every description of the text);
- RULE: fires on one token only right after a given previous token; a share `rule_share` of the token's occurrences
  get that previous token put before them, so the rule has enough firings (anchored too, but a rule decides);
- NOISE: the Gaussian noise added to every token; a constant of the config, not a column of the truth.

The four kinds after CIRCLE come from a generator of their own and their columns come last, so with their counts at
0 a cache is byte-identical to one of the generator before them. POSITION changes no other feature; DOCUMENT,
ANCHORED and RULE edit the token stream before the other features are planted (topic words, an anchor token brought
up to its frequency, a rule's previous token; all ids no token or circle feature uses): the other features keep
their token sets, directions, scales and frequencies, but fire on the edited stream, and the hash salts and
hidden-state runs are other draws.

Truth file layout (format "xenofeat.synthetic-truth" 1.0). `<path>.truth.safetensors`: `directions` (F, d) float32
unit rows; `act_indptr` (n_seq * L + 1,) int64, `act_indices` (nnz,) int32 and `act_values` (nnz,) float32, the CSR
arrays of the (n_seq * L, F) truth with row = seq * L + position; `cls_vector` (d,) float32. `<path>.truth.json`:
`format`, `format_version`, `config` (every SynthConfig field), `hook`, `n_rows`, `n_features`, `planted_l0`,
`noise_std`, `counts` (columns per kind), and `features`: one object per column with `index`, `kind`, `name`,
`labelable`, `n_firing`, `n_docs`, `frequency` (over unmasked tokens), `scale`, and per kind `target_freq`,
`token_set`, `angles`, `window`, `salt`, `run_length`, `partner`, `positions` (position: the band [lo, hi)),
`topic_words`, `n_topic_docs`, `shift` (document), `state_on` (anchored), `previous`, `share` (rule).

Each sequence starts with a [CLS] token (an outlier vector of norm `special_norm`, no features) and the last one
ends in [PAD] rows (zero vectors); both are marked in the cache mask and have empty truth rows.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file

from activations.errors import UserError
from activations.settings import SettingError, Settings, choice, integer, number

TOKEN = "token"
HASH = "hash"
HIDDEN = "hidden"
DENSE_PAIR = "dense_pair"
CIRCLE = "circle"
POSITION = "position"
DOCUMENT = "document"
ANCHORED = "anchored"
RULE = "rule"
NOISE = "noise"
KINDS = (
    TOKEN,
    HASH,
    HIDDEN,
    DENSE_PAIR,
    CIRCLE,
    POSITION,
    DOCUMENT,
    ANCHORED,
    RULE,
)  # truth columns (not NOISE)
LABELABLE_KINDS = (TOKEN, CIRCLE, POSITION, DOCUMENT, RULE)
"""Determined by the current token, its position, its document's text or the previous token; hash, hidden and
dense features are unlabelable by construction, and an anchored one is labelled by its token only as a whole (which
of the token's occurrences fire is not: the `token_anchored` flag's target, `ANCHORED_KINDS`)."""
ANCHORED_KINDS = (ANCHORED,)

HOOK = "synthetic.hook_x"
TRUTH_FORMAT = "xenofeat.synthetic-truth"
TRUTH_VERSION = "1.0"


@dataclass(frozen=True)
class SynthConfig(Settings):
    """Everything that determines a synthetic cache; the same config (seed included) gives the same files."""

    d_model: int = integer(64, 1)
    """Dimension of the activation vectors."""
    n_seq: int = integer(4000, 1)
    """Number of cache sequences (rows of the cache); tokens = n_seq * context_size."""
    context_size: int = integer(64, 4)
    """Tokens per sequence, the [CLS] token at position 0 included."""
    vocab_size: int = integer(1000, 1)
    """Vocabulary size, the two special tokens [CLS] (id 0) and [PAD] (id 1) included."""
    token_zipf_exponent: float = number(1.0, 0.0, lo_open=True)
    """Exponent s of the Zipf-Mandelbrot token distribution p(rank) ~ 1 / (rank + offset) ** s."""
    token_zipf_offset: float = number(2.7, 0.0)
    """Offset of the Zipf-Mandelbrot token distribution (2.7 as fitted to English; flattens the head)."""
    doc_len_mean: int = integer(200, 1)
    """Mean document length in tokens (geometric lengths); documents run across sequence boundaries."""
    doc_len_min: int = integer(16, 1)
    """Shortest document, in tokens."""
    n_token: int = integer(48, 0)
    """Features that fire exactly on a small planted set of current tokens."""
    token_set_max: int = integer(3, 1)
    """Each token feature fires on 1 .. token_set_max distinct token ids (sets of different features are disjoint)."""
    n_hash: int = integer(56, 0)
    """Features that fire when a salted hash of the last `hash_window` tokens falls in a range."""
    hash_window: int = integer(3, 1)
    """Tokens (the current one included) that the hash features hash."""
    n_hidden: int = integer(56, 0)
    """Features driven by a hidden per-document Markov state that does not influence the tokens."""
    hidden_run_length: float = number(6.0, 1.0)
    """Mean length, in tokens, of a hidden feature's bursts (runs of the on state)."""
    n_dense_pair: int = integer(1, 0)
    """Dense antipodal pairs: one direction, firing with + sign on some tokens and - sign on others."""
    dense_density: float = number(0.12, 0.0, 0.5, lo_open=True)
    """Fraction of tokens on which each side of a dense pair fires (so both sides are dense, > 0.1)."""
    n_circle: int = integer(1, 0)
    """Planted circles: two orthonormal directions with values r (cos t, sin t) on a cyclic token set."""
    circle_points: int = integer(7, 3)
    """Tokens on each circle, at equally spaced angles (like the days of the week)."""
    circle_freq: float = number(0.03, 0.0, 0.5, lo_open=True)
    """Target fraction of tokens on which a circle fires (the summed frequency of its tokens)."""
    freq_max: float = number(0.08, 0.0, 0.5, lo_open=True)
    """Firing frequency of the most frequent token/hash/hidden feature (Zipf-like ranks from max to min)."""
    freq_min: float = number(0.005, 0.0, 0.5, lo_open=True)
    """Firing frequency of the rarest token/hash/hidden feature."""
    magnitude_mean: float = number(1.0, 0.0, lo_open=True)
    """Mean of the normal whose absolute value gives each firing's magnitude."""
    magnitude_std: float = number(0.25, 0.0)
    """Standard deviation of that normal."""
    scale_min: float = number(0.75, 0.0, lo_open=True)
    """Each feature's magnitudes are scaled by a factor drawn uniformly from [scale_min, scale_max]."""
    scale_max: float = number(1.5, 0.0, lo_open=True)
    """Upper end of the per-feature scale."""
    noise_std: float = number(0.05, 0.0)
    """Standard deviation, per dimension, of the isotropic Gaussian noise added to every token but padding."""
    special_norm: float = number(8.0, 0.0)
    """Norm of the [CLS] vector (an outlier, like real special tokens; masked)."""
    seed: int = integer(0, 0)
    """Seed of every random choice (directions, tokens, firings, magnitudes, noise, hash salts)."""
    dtype: str = choice("float16", "float16", "float32")
    """Storage dtype of the cache's activations: float16 or float32."""
    n_position: int = integer(1, 0)
    """Features that fire by position: on every token at a band of `position_width` cache positions."""
    position_width: int = integer(3, 1)
    """Consecutive positions of a position feature's band (its frequency is about width / (context_size - 1))."""
    n_document: int = integer(1, 0)
    """Document-level features: on every token of the documents a hidden topic picks (topic words shift them)."""
    document_fraction: float = number(0.05, 0.0, 1.0, lo_open=True, hi_open=True)
    """Share of documents in a document feature's topic."""
    document_words: int = integer(4, 1)
    """Topic words of each document feature (rare token ids, not used by the token and circle features)."""
    document_shift: float = number(0.1, 0.0, 1.0)
    """Share of a topic document's tokens replaced by its topic words."""
    n_anchored: int = integer(1, 0)
    """Token-anchored features: on one token only while a hidden per-document Markov state is on."""
    anchored_on: float = number(0.35, 0.0, 1.0, lo_open=True, hi_open=True)
    """Share of the time an anchored feature's hidden state is on (its share of the token's occurrences)."""
    anchored_run_length: float = number(30.0, 1.0)
    """Mean length, in tokens, of the runs of an anchored feature's on state."""
    anchored_token_freq: float = number(0.04, 0.0, 0.5, lo_open=True)
    """Share of the stream that is the token an anchored or rule feature is anchored on (a token no other feature
    uses, brought up to this share by replacing tokens at random)."""
    n_rule: int = integer(1, 0)
    """Rule-decided anchored features: on one token only right after a given previous token."""
    rule_share: float = number(0.4, 0.0, 1.0, lo_open=True, hi_open=True)
    """Share of a rule feature's token occurrences that get its previous token put before them (edits the stream)."""

    def check(self) -> None:
        """Rules across fields (each field's own range is declared with it)."""
        if self.n_features < 1:
            raise SettingError("n_token", self.n_token, "must be such that at least one feature is planted")
        if self.doc_len_min > self.doc_len_mean:
            raise SettingError("doc_len_min", self.doc_len_min, "must be <= doc_len_mean")
        if self.freq_min > self.freq_max:
            raise SettingError("freq_min", self.freq_min, "must be in (0, freq_max]")
        if self.scale_min > self.scale_max:
            raise SettingError("scale_min", self.scale_min, "must be in (0, scale_max]")
        if self.d_model < 2 and self.n_circle > 0:
            raise SettingError("d_model", self.d_model, "must be >= 2 for a circle")
        needed = self.n_token * self.token_set_max + self.n_circle * self.circle_points
        needed += self.n_document * self.document_words + self.n_anchored + 2 * self.n_rule
        if self.vocab_size - 2 < needed:
            raise SettingError(
                "vocab_size",
                self.vocab_size,
                f"must be large enough for the planted token sets ({needed} + 2)",
            )
        if self.n_position and self.position_width > self.context_size - 1:
            raise SettingError(
                "position_width",
                self.position_width,
                f"must be at most context_size - 1 ({self.context_size - 1})",
            )

    @property
    def n_features(self) -> int:
        """Columns of the truth: one per token/hash/hidden/position/document/anchored/rule feature, two per dense
        pair and per circle."""
        extra = self.n_position + self.n_document + self.n_anchored + self.n_rule
        return self.n_token + self.n_hash + self.n_hidden + 2 * self.n_dense_pair + 2 * self.n_circle + extra

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
        """(F,) bool: True for the kinds a short description predicts (`LABELABLE_KINDS`)."""
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
