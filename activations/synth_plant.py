"""Sampling for the synthetic ground truth: the token stream, the planted feature directions and their firings.

Pure functions of a `SynthConfig` and a numpy Generator; no I/O (the writing lives in synth.py). Everything works on
the *stream*: all documents concatenated, before they are cut into cache sequences, so a document's context (for
the hash features) and its hidden state (for the hidden features) run across sequence boundaries as they would in
a real corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from activations.synth import CIRCLE, DENSE_PAIR, HASH, HIDDEN, TOKEN, SynthConfig

N_SPECIAL = 2  # token ids 0 ([CLS]) and 1 ([PAD]); regular tokens are 2 .. vocab_size-1
CLS_ID = 0
PAD_ID = 1

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class Stream:
    """The text of the synthetic corpus: all documents back to back."""

    tokens: np.ndarray  # (n,) int32 regular token ids
    doc_ids: np.ndarray  # (n,) int32
    positions: np.ndarray  # (n,) int32 position within the document
    doc_starts: np.ndarray  # (n_docs,) int64 stream index of each document's first token
    doc_lengths: np.ndarray  # (n_docs,) int64
    token_probs: np.ndarray  # (vocab_size,) float64 sampling probability of each id (0 for special ids)


@dataclass(frozen=True)
class Firing:
    """Where one planted feature (one column of the truth matrix) is active, and with what value."""

    rows: np.ndarray  # (m,) int64 stream indices
    values: np.ndarray  # (m,) float32 (signed only for circle columns)


@dataclass(frozen=True)
class PlantedFeature:
    """One column of the truth matrix: its kind, name, direction and firings, plus facts for the truth file."""

    kind: str
    name: str
    direction: np.ndarray  # (d,) float32 unit vector
    firing: Firing
    meta: dict[str, Any]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic): a fast, well-mixed hash."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def unit_uniform(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1) (53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def zipf_mandelbrot(n: int, exponent: float, offset: float) -> np.ndarray:
    """Probabilities proportional to 1 / (rank + offset) ** exponent for ranks 1..n."""
    p = 1.0 / (np.arange(1, n + 1, dtype=np.float64) + offset) ** exponent
    return p / p.sum()


def sample_stream(cfg: SynthConfig, n_text: int, rng: np.random.Generator) -> Stream:
    """Documents of geometric length (at least `doc_len_min`) with i.i.d. Zipf tokens, `n_text` tokens in all."""
    probs = np.zeros(cfg.vocab_size)
    probs[N_SPECIAL:] = zipf_mandelbrot(
        cfg.vocab_size - N_SPECIAL, cfg.token_zipf_exponent, cfg.token_zipf_offset
    )
    extra = cfg.doc_len_mean - cfg.doc_len_min
    lengths: list[np.ndarray] = []
    total = 0
    while total < n_text:
        chunk = (
            cfg.doc_len_min - 1 + rng.geometric(1.0 / (extra + 1), size=max(16, n_text // cfg.doc_len_mean))
        )
        lengths.append(chunk)
        total += int(chunk.sum())
    length = np.concatenate(lengths).astype(np.int64)
    ends = np.cumsum(length)
    n_docs = int(np.searchsorted(ends, n_text) + 1)
    length = length[:n_docs]
    length[-1] -= int(ends[n_docs - 1] - n_text)  # the last document is cut where the text ends
    starts = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    doc_ids = np.repeat(np.arange(n_docs, dtype=np.int32), length)
    positions = (np.arange(n_text, dtype=np.int64) - np.repeat(starts, length)).astype(np.int32)
    tokens = rng.choice(cfg.vocab_size, size=n_text, p=probs).astype(np.int32)
    return Stream(tokens, doc_ids, positions, starts, length, probs)


def sample_directions(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 random unit vectors: near-orthogonal in high d, the usual model of superposition."""
    v = rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def zipf_frequencies(n: int, f_max: float, f_min: float) -> np.ndarray:
    """n frequencies f_r = f_max * r ** -a, with a chosen so that they span exactly [f_min, f_max]."""
    if n == 1:
        return np.array([f_max])
    a = np.log(f_max / f_min) / np.log(n)
    return f_max * np.arange(1, n + 1, dtype=np.float64) ** -a


def pick_tokens(probs: np.ndarray, available: np.ndarray, target: float, k: int, k_max: int) -> list[int]:
    """Greedily pick about k (at most k_max) available token ids whose probabilities add up close to `target`;
    marks them taken. More than k are taken only while the set is short of 3/4 of its target."""
    chosen: list[int] = []
    remaining = target
    for slot in range(k_max):
        free = np.flatnonzero(available)
        if len(free) == 0 or remaining < 0.1 * target or (slot >= k and remaining < 0.25 * target):
            break
        want = remaining / max(1, k - slot)
        tok = int(free[np.argmin(np.abs(probs[free] - want))])
        chosen.append(tok)
        available[tok] = False
        remaining -= probs[tok]
    return chosen


def magnitudes(cfg: SynthConfig, m: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """(m,) float32 non-negative magnitudes |N(mean, std)| * scale."""
    return (np.abs(rng.normal(cfg.magnitude_mean, cfg.magnitude_std, size=m)) * scale).astype(np.float32)


def context_keys(stream: Stream, window: int, vocab_size: int) -> np.ndarray:
    """(n,) uint64 code of the last `window` tokens of each token's document (the token included)."""
    base = np.uint64(vocab_size + 1)  # id vocab_size stands for "before the document started"
    key = np.zeros(len(stream.tokens), dtype=np.uint64)
    for back in range(window):
        prev = np.full(len(stream.tokens), vocab_size, dtype=np.int64)
        prev[back:] = stream.tokens[: len(stream.tokens) - back]
        prev[stream.positions < back] = vocab_size
        key = key * base + prev.astype(np.uint64)
    return key


def hidden_chain(stream: Stream, freq: float, run_length: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: a two-state Markov chain per document, on a fraction `freq` of the time in runs of mean
    `run_length`, started from its stationary distribution in every document and independent of the tokens."""
    p_off = 1.0 / run_length  # leave the on state
    p_on = min(1.0, freq / ((1.0 - freq) * run_length))  # leave the off state, so that P(on) = freq
    out = np.zeros(len(stream.tokens), dtype=bool)
    for start, length in zip(stream.doc_starts.tolist(), stream.doc_lengths.tolist(), strict=True):
        pos = 0
        on = bool(rng.random() < freq)
        while pos < length:
            run = int(rng.geometric(p_off if on else p_on))
            if on:
                out[start + pos : start + min(pos + run, length)] = True
            pos += run
            on = not on
    return out


@dataclass(frozen=True)
class Choices:
    """The draws of `plant_features` before any firing: frequencies, directions, scales and token sets."""

    freqs: np.ndarray  # (n_token + n_hash + n_hidden,) target frequencies
    dirs: np.ndarray  # (n_dirs, d) float32
    scales: np.ndarray  # (n_dirs,)
    available: np.ndarray  # (vocab_size,) bool: regular ids no token or circle feature took
    circle_sets: list[list[int]]
    sets: dict[int, list[int]]  # token feature -> its token ids


def choose(cfg: SynthConfig, token_probs: np.ndarray, rng: np.random.Generator) -> Choices:
    """The first draws of `plant_features`; they depend on the token probabilities only, not on the stream, so a
    copy of the generator tells which token ids the token and circle features will take before they are planted."""
    n_freq = cfg.n_token + cfg.n_hash + cfg.n_hidden
    # ranks shuffled across kinds, so every kind gets common and rare features
    freqs = rng.permutation(zipf_frequencies(n_freq, cfg.freq_max, cfg.freq_min)) if n_freq else np.zeros(0)
    n_dirs = n_freq + 2 * cfg.n_dense_pair + 2 * cfg.n_circle
    dirs = sample_directions(n_dirs, cfg.d_model, rng)
    scales = rng.uniform(cfg.scale_min, cfg.scale_max, size=n_dirs)
    available = token_probs > 0
    # circle tokens first, so the token features cannot take them
    circle_sets = []
    for _ in range(cfg.n_circle):
        toks = pick_tokens(token_probs, available, cfg.circle_freq, cfg.circle_points, cfg.circle_points)
        circle_sets.append(toks)
    sets: dict[int, list[int]] = {}
    # the most frequent features choose first, so the rare ones still find tokens of about their frequency
    for i in sorted(range(cfg.n_token), key=lambda i: -freqs[i]):
        k = int(rng.integers(1, cfg.token_set_max + 1))
        sets[i] = pick_tokens(token_probs, available, float(freqs[i]), k, cfg.token_set_max)
    return Choices(freqs, dirs, scales, available, circle_sets, sets)


def plant_features(cfg: SynthConfig, stream: Stream, rng: np.random.Generator) -> list[PlantedFeature]:
    """All planted features of the first kinds, in kind order: token, hash, hidden, dense_pair (+ then -), circle
    (cos then sin); the later kinds are `synth_extra.plant_extra`'s."""
    ch = choose(cfg, stream.token_probs, rng)
    freqs, dirs, scales, circle_sets, sets = ch.freqs, ch.dirs, ch.scales, ch.circle_sets, ch.sets
    out: list[PlantedFeature] = []

    def add(kind: str, name: str, j: int, rows: np.ndarray, meta: dict[str, Any]) -> None:
        vals = magnitudes(cfg, len(rows), float(scales[j]), rng)
        meta = {"scale": float(scales[j]), **meta}
        out.append(PlantedFeature(kind, name, dirs[j], Firing(rows.astype(np.int64), vals), meta))

    for i in range(cfg.n_token):
        rows = np.flatnonzero(np.isin(stream.tokens, sets[i]))
        add(TOKEN, f"token{i}", i, rows, {"target_freq": float(freqs[i]), "token_set": sorted(sets[i])})
    j = cfg.n_token
    if cfg.n_hash:
        keys = context_keys(stream, cfg.hash_window, cfg.vocab_size)
    for i in range(cfg.n_hash):
        salt = np.uint64(int(rng.integers(0, 2**63 - 1)))
        u = unit_uniform(splitmix64(keys ^ salt))
        rows = np.flatnonzero(u < freqs[j])
        meta = {"target_freq": float(freqs[j]), "window": cfg.hash_window, "salt": int(salt)}
        add(HASH, f"hash{i}", j, rows, meta)
        j += 1
    for i in range(cfg.n_hidden):
        rows = np.flatnonzero(hidden_chain(stream, float(freqs[j]), cfg.hidden_run_length, rng))
        add(
            HIDDEN,
            f"hidden{i}",
            j,
            rows,
            {"target_freq": float(freqs[j]), "run_length": cfg.hidden_run_length},
        )
        j += 1
    for i in range(cfg.n_dense_pair):
        u = rng.random(len(stream.tokens))
        plus, minus = np.flatnonzero(u < cfg.dense_density), np.flatnonzero(u >= 1.0 - cfg.dense_density)
        dirs[j + 1] = -dirs[j]  # one direction, both signs: an antipodal pair
        scales[j + 1] = scales[j]
        add(DENSE_PAIR, f"dense{i}+", j, plus, {"target_freq": cfg.dense_density, "partner": f"dense{i}-"})
        add(
            DENSE_PAIR,
            f"dense{i}-",
            j + 1,
            minus,
            {"target_freq": cfg.dense_density, "partner": f"dense{i}+"},
        )
        j += 2
    for i, toks in enumerate(circle_sets):
        u, v = dirs[j].astype(np.float64), dirs[j + 1].astype(np.float64)
        v = v - (v @ u) * u  # the circle's plane, orthonormal
        dirs[j + 1] = (v / np.linalg.norm(v)).astype(np.float32)
        angle_of = np.zeros(cfg.vocab_size)
        angle_of[toks] = 2 * np.pi * np.arange(len(toks)) / len(toks)
        rows = np.flatnonzero(np.isin(stream.tokens, toks))
        r = magnitudes(cfg, len(rows), float(scales[j]), rng)
        theta = angle_of[stream.tokens[rows]]
        meta = {
            "token_set": list(toks),
            "angles": [float(a) for a in angle_of[toks]],
            "scale": float(scales[j]),
        }
        for name, trig, jj in (("cos", np.cos, j), ("sin", np.sin, j + 1)):
            t = trig(theta)
            keep = np.abs(t) > 1e-6  # e.g. sin(0) = 0: a zero is not a firing
            vals = (r * t).astype(np.float32)
            out.append(
                PlantedFeature(CIRCLE, f"circle{i}.{name}", dirs[jj], Firing(rows[keep], vals[keep]), meta)
            )
        j += 2
    return out
