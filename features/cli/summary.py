"""What `xenofeat score` and `xenofeat run` print: the summary of a scored run and the random-init control beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _null(summary: dict[str, Any], key: str) -> str:
    """The null beside a stability figure, e.g. ", random dictionaries 0.174" ("" for stores scored without it)."""
    null = summary.get(f"{key}_null")
    return "" if null is None else f", random dictionaries {null:.3f}"


def summary_text(summary: dict[str, Any], where: Path) -> str:
    """The printed summary of a scored run."""
    by = ", ".join(f"{k} {v}" for k, v in sorted(summary["best_describer"].items())) or "none"
    fby = ", ".join(f"{k} {v}" for k, v in sorted(summary["flagged_by_describer"].items())) or "none"
    sae = summary["sae"]
    ctl = summary.get("shuffled_control_lbl")
    lines = [
        f"scored {summary['n_latents']} latents of {sae['path']} on {summary['tokens_scored']:,} tokens "
        f"(explained variance {sae['explained_variance']:.3f}, L0 {sae['l0']:.1f})",
        f"  latents alive       {summary['alive']}",
        f"  well defined        {summary['well_defined']}  (passes: "
        + ", ".join(f"{k.removesuffix('_pass')} {v}" for k, v in summary["passes"].items())
        + ")",
        *learned_lines(summary.get("learned")),
        f"  flagged             {summary['flagged']}  (best describer of the flagged: {fby})",
        f"  token-anchored      {summary.get('token_anchored', 0)}  (fires on a minority of its tokens' "
        "occurrences, and which ones resists every describer)",
        f"  best describer      {by}  (LBL scored on {summary['lbl_scored']} latents)",
        f"  PW-MCC              {summary['pw_mcc']:.3f} +- {summary['pw_mcc_std']:.3f} over seeds {summary['seeds']}"
        + _null(summary, "pw_mcc"),
        f"  shared fraction     {summary['shared_fraction']:.3f} at tau {summary['tau']}"
        + _null(summary, "shared_fraction")
        + f" (decoder cosine only: {summary['shared_fraction_dec']:.3f}{_null(summary, 'shared_fraction_dec')})",
    ]
    if summary.get("stable_by_subspace"):
        lines.append(
            f"  stable as a pair    {summary['stable_by_subspace']}  (pass C2 only by the pair's subspace)"
        )
    if ctl is not None:
        lines.append(f"  shuffled control    mean LBL {ctl:.3f}")
    lines.append(f"store written: {where}")
    return "\n".join(lines) + "\n"


def learned_lines(learned: dict[str, Any] | None) -> list[str]:
    """C7's line of the summary: how many latents are learned, or why C7 does not apply (and so does not gate)."""
    if not learned:
        return []
    if not learned["applicable"]:
        return [f"  learned (C7)        not applicable: {learned['why_not']} (does not gate well_defined)"]
    gate = "gates well_defined" if learned["gates"] else "a tag: does not gate"
    return [
        f"  learned (C7)        {learned['n_learned']} of {learned['n_judged']} judged  (R² from "
        f"{learned['network']} < {learned['max_r2']}; {gate})"
    ]


CONTROL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("latents alive", "alive", "{}"),
    ("well defined", "well_defined", "{}"),
    ("learned (C7)", "n_learned", "{}"),
    ("flagged", "flagged", "{}"),
    ("flagged without C7", "flagged_without_learned", "{}"),
    ("token-anchored", "token_anchored", "{}"),
    ("LBL scored", "lbl_scored", "{}"),
    ("mean LBL", "lbl_mean", "{:.3f}"),
    ("PW-MCC", "pw_mcc", "{:.3f}"),
    ("PW-MCC, random dicts", "pw_mcc_null", "{:.3f}"),
)
"""(label, key, format) of what `xenofeat run --control` compares; `n_learned` is read from the `learned` block."""


def control_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The CONTROL_ROWS figures of one store's summary (None where the store has no such figure)."""
    learned = summary.get("learned") or {}
    flat = {**summary, "n_learned": learned.get("n_learned") if learned.get("applicable") else None}
    return {key: flat.get(key) for _, key, _ in CONTROL_ROWS}


def control_text(trained: dict[str, Any], control: dict[str, Any]) -> str:
    """Side by side: the trained model's scores and the random-init control's. "flagged" has C7 applied (on the
    control, C7 compares it with a second random draw); "flagged without C7" is the flag with C7 left out."""
    a, b = control_figures(trained), control_figures(control)
    show = lambda v, fmt: "-" if v is None else fmt.format(v)  # noqa: E731
    rows = [
        f"  {name:22s}{show(a[key], fmt):>12s}{show(b[key], fmt):>14s}\n" for name, key, fmt in CONTROL_ROWS
    ]
    return f"control (random-init model){'trained':>12s}{'random init':>14s}\n" + "".join(rows)
