"""What `xenofeat score` and `xenofeat run` print: the summary of a scored run and the random-init control beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        f"  flagged             {summary['flagged']}  (best describer of the flagged: {fby})",
        f"  token-anchored      {summary.get('token_anchored', 0)}  (fires on a minority of its tokens' "
        "occurrences, and which ones resists every describer)",
        f"  best describer      {by}  (LBL scored on {summary['lbl_scored']} latents)",
        f"  PW-MCC              {summary['pw_mcc']:.3f} +- {summary['pw_mcc_std']:.3f} over seeds {summary['seeds']}",
        f"  shared fraction     {summary['shared_fraction']:.3f} at tau {summary['tau']} "
        f"(decoder cosine only: {summary['shared_fraction_dec']:.3f})",
    ]
    if ctl is not None:
        lines.append(f"  shuffled control    mean LBL {ctl:.3f}")
    lines.append(f"store written: {where}")
    return "\n".join(lines) + "\n"


def control_text(trained: dict[str, Any], control: dict[str, Any]) -> str:
    """Side by side: the trained model's scores and the random-init control's (labelability's second control)."""

    def row(name: str, key: str, fmt: str = "{}") -> str:
        a, b = trained.get(key), control.get(key)
        show = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
        return f"  {name:22s}{show(a):>12s}{show(b):>14s}\n"

    return (
        f"control (random-init model){'trained':>12s}{'random init':>14s}\n"
        + row("latents alive", "alive")
        + row("well defined", "well_defined")
        + row("flagged", "flagged")
        + row("LBL scored", "lbl_scored")
        + row("mean LBL", "lbl_mean", "{:.3f}")
        + row("PW-MCC", "pw_mcc", "{:.3f}")
    )
