"""The planted kinds that test labelability beyond the current token: position, document, anchored and rule features.

Pure functions of a `SynthConfig`, the stream and a generator of their own (the fourth child of the config's seed), so
the first kinds (`synth_plant.plant_features`) draw exactly what they drew before these kinds existed. In order:
1. `edit_stream` picks the tokens these kinds use among those the token and circle features leave (known before
   they are planted from a copy of their generator, `synth_plant.choose`), then edits the stream: topic words into
   the topic documents of each document feature, an anchored or rule feature's token brought up to
   `anchored_token_freq`, and a rule feature's previous token before a share of its token's occurrences. Without
   document, anchored and rule features the stream is untouched.
2. `plant_extra` plants the four kinds on the edited stream (after the first kinds were planted on the same
   stream), their columns after the first kinds': position, document, anchored, rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from activations.synth import ANCHORED, DOCUMENT, POSITION, RULE, SynthConfig
from activations.synth_plant import (
    Firing,
    PlantedFeature,
    Stream,
    hidden_chain,
    magnitudes,
    pick_tokens,
    sample_directions,
)

RULE_PREV_FREQ = 0.002
"""Target probability of a rule feature's previous token before the edit (rare, so the rule decides)."""


@dataclass(frozen=True)
class ExtraTokens:
    """What `edit_stream` chose: the topic of each document feature and the tokens of the anchored and rule ones."""

    topic_docs: list[np.ndarray]  # per document feature: (n_docs,) bool, the documents in its topic
    topic_words: list[list[int]]  # per document feature: its topic words
    anchored: list[int]  # per anchored feature: its token
    rule: list[tuple[int, int]]  # per rule feature: (previous token, token)


def extra_generator(seed: int) -> np.random.Generator:
    """The generator of the later kinds: the fourth child of the config's seed (the first three are the stream's,
    the first kinds' and the noise's)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])


def edit_stream(
    cfg: SynthConfig, stream: Stream, available: np.ndarray, rng: np.random.Generator
) -> tuple[Stream, ExtraTokens]:
    """Choose the later kinds' tokens among the `available` ids (a copy is marked) and edit the stream for the
    document and rule features; returns the (possibly) edited stream and the choices."""
    free = available.copy()
    probs = stream.token_probs
    tokens = stream.tokens.copy()
    topic_docs, topic_words = [], []
    for _ in range(cfg.n_document):
        cand = np.flatnonzero(free)
        words = cand[np.argsort(probs[cand], kind="stable")[: cfg.document_words]]  # the rarest free ids
        free[words] = False
        docs = rng.random(len(stream.doc_lengths)) < cfg.document_fraction
        at = np.flatnonzero(docs[stream.doc_ids] & (rng.random(len(tokens)) < cfg.document_shift))
        tokens[at] = rng.choice(words, size=len(at))
        topic_docs.append(docs)
        topic_words.append([int(w) for w in words])
    # an anchor token is no other feature's (a shared token invites absorption: one SAE latent for both), so the
    # frequent ones are taken; it is brought up to `anchored_token_freq` by replacing tokens at random
    anchored = []
    for _ in range(cfg.n_anchored):
        anchored.append(pick_tokens(probs, free, cfg.anchored_token_freq, 1, 1)[0])
        _top_up(tokens, anchored[-1], cfg.anchored_token_freq, rng)
    rule = []
    for _ in range(cfg.n_rule):
        tok = pick_tokens(probs, free, cfg.anchored_token_freq, 1, 1)[0]
        _top_up(tokens, tok, cfg.anchored_token_freq, rng)
        prev = pick_tokens(probs, free, RULE_PREV_FREQ, 1, 1)[0]  # rare, and no other feature's token
        # the previous token must be in the same document and the same cache sequence (what the window shows)
        body = cfg.context_size - 1
        at = np.flatnonzero((tokens == tok) & (stream.positions >= 1) & (np.arange(len(tokens)) % body >= 1))
        at = at[rng.random(len(at)) < cfg.rule_share]
        tokens[at - 1] = prev
        rule.append((prev, tok))
    edited = (
        dataclasses.replace(stream, tokens=tokens) if cfg.n_document + cfg.n_anchored + cfg.n_rule else stream
    )
    return edited, ExtraTokens(topic_docs, topic_words, anchored, rule)


def _top_up(tokens: np.ndarray, tok: int, target: float, rng: np.random.Generator) -> None:
    """Replace random tokens by `tok` (in place) until about a share `target` of the stream is `tok`."""
    rate = (target - np.mean(tokens == tok)) / (1.0 - np.mean(tokens == tok))
    if rate > 0:
        tokens[rng.random(len(tokens)) < rate] = tok


def plant_extra(
    cfg: SynthConfig, stream: Stream, chosen: ExtraTokens, rng: np.random.Generator
) -> list[PlantedFeature]:
    """The later kinds' features on the (edited) stream, in kind order: position, document, anchored, rule."""
    n = cfg.n_position + cfg.n_document + cfg.n_anchored + cfg.n_rule
    dirs = sample_directions(n, cfg.d_model, rng)
    scales = rng.uniform(cfg.scale_min, cfg.scale_max, size=n)
    out: list[PlantedFeature] = []

    def add(kind: str, name: str, rows: np.ndarray, meta: dict) -> None:
        j = len(out)
        vals = magnitudes(cfg, len(rows), float(scales[j]), rng)
        firing = Firing(rows.astype(np.int64), vals)
        out.append(PlantedFeature(kind, name, dirs[j], firing, {"scale": float(scales[j]), **meta}))

    body = cfg.context_size - 1
    seq_pos = 1 + np.arange(len(stream.tokens)) % body  # position in the cache sequence ([CLS] is 0)
    for i in range(cfg.n_position):
        lo = int(rng.integers(1, body - cfg.position_width + 2))
        rows = np.flatnonzero((seq_pos >= lo) & (seq_pos < lo + cfg.position_width))
        add(POSITION, f"position{i}", rows, {"positions": [lo, lo + cfg.position_width]})
    for i, (docs, words) in enumerate(zip(chosen.topic_docs, chosen.topic_words, strict=True)):
        meta = {"topic_words": words, "n_topic_docs": int(docs.sum()), "shift": cfg.document_shift}
        add(DOCUMENT, f"document{i}", np.flatnonzero(docs[stream.doc_ids]), meta)
    for i, tok in enumerate(chosen.anchored):
        on = hidden_chain(stream, cfg.anchored_on, cfg.anchored_run_length, rng)
        meta = {"token_set": [tok], "state_on": cfg.anchored_on, "run_length": cfg.anchored_run_length}
        add(ANCHORED, f"anchored{i}", np.flatnonzero(on & (stream.tokens == tok)), meta)
    prev = np.r_[-1, stream.tokens[:-1]]
    prev[(stream.positions == 0) | (seq_pos == 1)] = -1  # none at a document's or a sequence's first token
    for i, (p, tok) in enumerate(chosen.rule):
        rows = np.flatnonzero((stream.tokens == tok) & (prev == p))
        add(RULE, f"rule{i}", rows, {"token_set": [tok], "previous": p, "share": cfg.rule_share})
    return out
