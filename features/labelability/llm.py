"""The `llm` describer: an explanation written by a language model and its detection score on LBL's held-out windows.

This is the describer the field uses (delphi, Neuronpedia; Paulo et al. 2024): a model reads a latent's top and
decile-sampled windows, activating tokens marked `<<like this>>`, and writes one sentence; it then judges, window by
window, whether that sentence applies to the marked token of each held-out window LBL scored the other describers
on. The score is an AUROC like theirs: from the probability of "1" where the server returns log-probabilities
(`llm_score_kind` "auroc"), otherwise from its yes/no answers, for which AUROC equals balanced accuracy
(`llm_score_kind` "balanced_accuracy").

Why this module defines no `DESCRIBER` (the registry runs every module of this package that does, inside
`xenofeat score`): it needs a server the user runs, costs money or GPU time per request, and takes minutes per
latent, so it must never run as part of scoring. `xenofeat explain` (features.explain) runs it on a selection of
latents of a scored store and publishes the result into the store's columns declared here; this module holds only
the pure parts (settings, prompts, parsing, scoring, merging into the table).

What the score does is decided by the definition's `[llm]` section (`LLMConfig.mode`): "off" records and shows it,
"tag" also sets `llm_named` where the LLM's labelability clip(2 * AUROC - 1, 0, 1) reaches the flag's `max_lbl`,
"lbl" makes it one more describer of LBL (labelability and its upper bound become at least the LLM's; the flag is
recomputed by `features.flags.apply_flags`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from activations.settings import Settings, choice, integer, switch
from features.columns import Column
from features.labelability.metrics import auroc

NAME = "llm"
PROMPT_VERSION = "xf-llm-1"
"""Changes whenever the prompts below change: part of every cache key and recorded per latent."""
MARK_L, MARK_R = "<<", ">>"
NOT_EXPLAINED = {
    "llm_explanation": "",
    "auroc_llm": float("nan"),
    "llm_score_kind": "none",
    "llm_n_windows": 0,
    "llm_model": "",
    "llm_prompt_version": "",
    "llm_named": False,
}
"""The llm columns of a latent that was not explained (what `xenofeat score` writes)."""

COLUMNS = (
    Column("llm_explanation", "str", "the LLM's one-sentence explanation (`xenofeat explain`); empty when not "
           "explained", f"describer:{NAME}"),
    Column("auroc_llm", "float64", "held-out AUROC of the LLM's detection with its explanation (from its "
           "probabilities, or its yes/no answers: see llm_score_kind); NaN when not explained", f"describer:{NAME}"),
    Column("llm_score_kind", "str", "auroc (from log-probabilities), balanced_accuracy (yes/no answers, = their "
           "AUROC) or none (not explained or not scored)", f"describer:{NAME}"),
    Column("llm_n_windows", "int64", "held-out windows the LLM judged", f"describer:{NAME}"),
    Column("llm_model", "str", "the model that explained and judged", f"describer:{NAME}"),
    Column("llm_prompt_version", "str", "version of xenofeat's explanation and detection prompts",
           f"describer:{NAME}"),
    Column("llm_named", "bool", "[llm] mode tag or lbl: the LLM's labelability clip(2 * auroc_llm - 1, 0, 1) "
           "reaches the flag's max_lbl", f"describer:{NAME}"),
)  # fmt: skip


@dataclass(frozen=True)
class LLMConfig(Settings):
    """The LLM cross-check (`xenofeat explain`): what its score does, and what the model is shown."""

    mode: str = choice("off", "off", "tag", "lbl")
    """What the LLM's score does: "off" (recorded and shown only), "tag" (also sets llm_named), "lbl" (it is one
    more describer of LBL, and so of the flag)."""
    n_top: int = integer(10, 0, 1000)
    """Top-activation windows shown to the explainer."""
    per_decile: int = integer(2, 0, 100)
    """Windows per activation decile shown to the explainer (at most what the store kept)."""
    max_windows: int = integer(40, 2, 10**6)
    """Held-out windows judged per latent: a class-balanced sample of LBL's test windows (all when fewer)."""
    context: int = integer(16, 1, 512)
    """Tokens shown before the marked token of a held-out window (at most LBL's window)."""
    logprobs: bool = switch(True)
    """Ask for log-probabilities (an AUROC from probabilities); servers that refuse them need false."""
    max_tokens: int = integer(200, 16, 100_000)
    """Most tokens of an explanation answer."""


@dataclass(frozen=True)
class Judgement:
    """One detection answer: the probability that the window fires, and whether it came from log-probabilities."""

    p: float
    from_logprobs: bool


def window_text(tokens: Sequence[int], vocab: Sequence[str], marked: Sequence[bool]) -> str:
    """A window as text: marked tokens between << >> (runs of marked tokens share one pair). Tokens are joined as
    the vocabulary spells them when it carries its own spaces (GPT-2's "Ġ" or a leading space), by spaces else."""
    spaced = _spaced(vocab)
    parts, run = [], []
    for t, m in zip(tokens, marked, strict=True):
        if t < 0:
            continue
        s = vocab[t].replace("Ġ", " ").replace("Ċ", "\n") if spaced else vocab[t]
        if m:
            run.append(s)
            continue
        if run:
            parts.append(MARK_L + "".join(run) + MARK_R if spaced else MARK_L + " ".join(run) + MARK_R)
            run = []
        parts.append(s)
    if run:
        parts.append(MARK_L + ("".join(run) if spaced else " ".join(run)) + MARK_R)
    return ("" if spaced else " ").join(parts).strip()


def _spaced(vocab: Sequence[str]) -> bool:
    sample = vocab[: min(len(vocab), 2000)]
    return sum(1 for s in sample if s.startswith((" ", "Ġ"))) > len(sample) // 20


EXPLAIN_SYSTEM = (
    "You are a careful interpretability researcher studying one latent of a sparse autoencoder trained on a "
    "language model. You will see text examples on which the latent activates; the tokens where it activates are "
    f"marked {MARK_L}like this{MARK_R}. Find what the marked tokens have in common, in themselves and in their "
    "context, and describe it in one short sentence. Do not list the examples. End your answer with one line "
    "of the form\n[EXPLANATION]: <your sentence>"
)
DETECT_SYSTEM = (
    "You are a careful interpretability researcher. You will be given the explanation of a latent of a language "
    f"model and one text whose last token is marked {MARK_L}like this{MARK_R}. Decide whether the latent, as "
    "explained, activates on the marked token. Answer with a single character: 1 if it does, 0 if it does not."
)


def explain_messages(examples: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking for an explanation of a latent from its marked example texts."""
    body = "\n".join(f"Example {i + 1}: {text}" for i, text in enumerate(examples))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": body}]


def detect_messages(explanation: str, text: str) -> list[dict[str, str]]:
    """The chat messages asking whether `explanation` applies to the marked last token of `text`."""
    return [
        {"role": "system", "content": DETECT_SYSTEM},
        {"role": "user", "content": f"Explanation: {explanation}\nText: {text}\nAnswer (1 or 0):"},
    ]


def parse_explanation(answer: str) -> str:
    """The sentence after the last `[EXPLANATION]:`, or the answer's last non-empty line; ValueError if empty."""
    marker = "[EXPLANATION]:"
    text = answer.rsplit(marker, 1)[1] if marker in answer else answer
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the explanation answer is empty")
    return (lines[0] if marker in answer else lines[-1])[:1000]


def _digit(token: str) -> int | None:
    t = token.strip().lower()
    return 1 if t in ("1", "yes") else 0 if t in ("0", "no") else None


def parse_judgement(answer: str, top_logprobs: Sequence[dict] | None) -> Judgement:
    """P(fires) from the first answer token's top log-probabilities of "1" and "0" when given (normalised over the
    two), else 1.0 or 0.0 from the answer text; ValueError when neither says 1 or 0."""
    if top_logprobs:
        mass = [0.0, 0.0]
        for alt in top_logprobs:
            d = _digit(str(alt.get("token", "")))
            lp = alt.get("logprob")
            if d is not None and isinstance(lp, int | float) and math.isfinite(lp):
                mass[d] += math.exp(lp)
        if mass[0] + mass[1] > 0:
            return Judgement(mass[1] / (mass[0] + mass[1]), True)
    first = answer.strip()[:3]
    d = _digit(first[:1]) if first else None
    if d is None:
        d = _digit(first)
    if d is None:
        raise ValueError(f"the detection answer {answer.strip()[:40]!r} is neither 1 nor 0")
    return Judgement(float(d), False)


def detection_sample(label: np.ndarray, max_windows: int, latent: int) -> np.ndarray:
    """Indices of the held-out windows judged: up to max_windows // 2 of each class (the rest of the budget to the
    other class when one is short), drawn with a generator seeded by the latent, in their stored order."""
    label = np.asarray(label, bool)
    pos, neg = np.flatnonzero(label), np.flatnonzero(~label)
    n_pos = min(len(pos), max(max_windows // 2, max_windows - len(neg)))
    n_neg = min(len(neg), max_windows - n_pos)
    rng = np.random.default_rng([latent, 13])
    pick = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    return np.sort(pick).astype(np.int64)


def detection_score(judgements: Sequence[Judgement], label: np.ndarray) -> tuple[float, str]:
    """(AUROC, kind) of the judgements against the labels: "auroc" when every judgement came from
    log-probabilities, "balanced_accuracy" otherwise (the yes/no answers; their AUROC is balanced accuracy)."""
    label = np.asarray(label, bool)
    if not judgements or label.all() or not label.any():
        return float("nan"), "none"
    probs = all(j.from_logprobs for j in judgements)
    p = np.array([j.p for j in judgements]) if probs else np.array([float(j.p >= 0.5) for j in judgements])
    return float(auroc(p, label)[0]), "auroc" if probs else "balanced_accuracy"


def add_blank_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The table with the llm columns of latents not explained (a store scored before they existed, or a score)."""
    out = table.copy()
    for name, value in NOT_EXPLAINED.items():
        if name not in out.columns:
            out[name] = [value] * len(out)
    return out


@dataclass(frozen=True)
class LatentResult:
    """What `xenofeat explain` found for one latent."""

    latent: int
    explanation: str
    auroc: float
    kind: str
    n_windows: int


def _llm_lbl(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.clip(2 * np.asarray(values, np.float64) - 1, 0, 1)


def merge_results(
    table: pd.DataFrame, results: Sequence[LatentResult], model: str, cfg: LLMConfig, flag_cfg: object
) -> pd.DataFrame:
    """The table with the results in the llm columns and, by `cfg.mode`, `llm_named` set (tag, lbl) and the LLM
    made one more describer of LBL with the flag recomputed (lbl). Latents not in `results` keep their values."""
    from features.flags import apply_flags

    df = add_blank_columns(table)
    rows = np.array([r.latent for r in results], np.int64)
    df.loc[rows, "llm_explanation"] = [r.explanation for r in results]
    df.loc[rows, "auroc_llm"] = [r.auroc for r in results]
    df.loc[rows, "llm_score_kind"] = [r.kind for r in results]
    df.loc[rows, "llm_n_windows"] = [r.n_windows for r in results]
    df.loc[rows, "llm_model"] = model
    df.loc[rows, "llm_prompt_version"] = PROMPT_VERSION
    llm_lbl = _llm_lbl(df["auroc_llm"].to_numpy())
    named = np.nan_to_num(llm_lbl, nan=-1.0) >= flag_cfg.max_lbl  # type: ignore[attr-defined]
    df["llm_named"] = named if cfg.mode in ("tag", "lbl") else np.zeros(len(df), bool)
    if cfg.mode == "lbl":
        df = _enter_lbl(df, rows, llm_lbl)
        df = apply_flags(df, flag_cfg)  # type: ignore[arg-type]
    return df


def _enter_lbl(df: pd.DataFrame, rows: np.ndarray, llm_lbl: np.ndarray) -> pd.DataFrame:
    """LBL = the max over describers, the LLM included, for the explained latents that LBL scored. A latent the LLM
    won before starts again from its describers' best (clip(2 * max AUROC - 1), the first in tie order), so a rerun
    does not stack. `readable` stays the best registered describer's form (the LLM's is `llm_explanation`)."""
    from features.labelability import describer_names

    names = [n for n in describer_names() if f"auroc_{n}" in df]
    aurocs = df[[f"auroc_{n}" for n in names]].to_numpy(np.float64)
    for i in rows:
        if math.isnan(float(df.at[i, "labelability"])) or math.isnan(llm_lbl[i]):
            continue  # not scored by LBL (too few held-out positives): the LLM cannot change that
        lbl, best = float(df.at[i, "labelability"]), str(df.at[i, "best_describer"])
        if best == NAME:
            a = aurocs[i]
            ok = ~np.isnan(a)
            j = int(np.flatnonzero(ok)[np.argmax(a[ok])]) if ok.any() else -1
            lbl, best = (float(_llm_lbl(a[j])), names[j]) if j >= 0 else (0.0, "none")
        if llm_lbl[i] > lbl:
            lbl, best = float(llm_lbl[i]), NAME
        df.at[i, "labelability"] = lbl
        df.at[i, "best_describer"] = best
        df.at[i, "labelability_hi"] = max(float(df.at[i, "labelability_hi"]), lbl)
    return df
