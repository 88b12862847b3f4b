"""`xenofeat cache synth`: write a synthetic cache with planted ground truth (see synth.py)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

from activations import format as fmt
from activations.errors import UserError
from activations.synth import SynthConfig, truth_paths
from activations.synth_write import generate_synthetic

_DEFAULTS = SynthConfig()

# option -> SynthConfig field, for the options that map one to one
_FIELDS = {
    "d_model": "--d-model",
    "context_size": "--context-size",
    "vocab_size": "--vocab-size",
    "n_token": "--n-token",
    "n_hash": "--n-hash",
    "n_hidden": "--n-hidden",
    "n_dense_pair": "--n-dense-pair",
    "n_circle": "--n-circle",
    "freq_max": "--freq-max",
    "freq_min": "--freq-min",
    "noise_std": "--noise-std",
    "seed": "--seed",
    "dtype": "--dtype",
}


def add_synth_command(cache_sub: argparse._SubParsersAction) -> None:
    """Add `synth` to the subcommands of `xenofeat cache`."""
    q = cache_sub.add_parser(
        "synth",
        help="write a synthetic cache with planted features (ground truth beside it)",
        description="Write a synthetic activation cache whose activations are sparse sums of planted directions "
        "(token-determined, context-hash, hidden-state, a dense antipodal pair, a circle) plus noise, and the "
        "planted truth beside it as <out>.truth.safetensors and <out>.truth.json.",
    )
    q.add_argument("--out", required=True, help="the HDF5 file to write")
    n_default = _DEFAULTS.n_seq * _DEFAULTS.context_size
    q.add_argument(
        "--tokens",
        type=int,
        default=n_default,
        help=f"tokens in all, rounded up to whole sequences (default {n_default})",
    )
    for field in dataclasses.fields(SynthConfig):
        opt = _FIELDS.get(field.name)
        if opt is None:
            continue
        default = getattr(_DEFAULTS, field.name)
        kw = {"choices": fmt.DTYPES} if field.name == "dtype" else {"type": type(default)}
        q.add_argument(opt, default=default, help=f"{_doc(field.name)} (default {default})", **kw)
    q.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (and its truth files)"
    )
    q.set_defaults(func=cmd_synth)


def _doc(name: str) -> str:
    """The first sentence of a SynthConfig field's docstring."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(SynthConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and getattr(a.target, "id", None) == name and isinstance(b, ast.Expr):
            return str(b.value.value).split(". ")[0].rstrip(".")  # type: ignore[attr-defined]
    return name


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build the config from the parsed options; a bad value becomes a UserError naming the option."""
    if args.tokens < 1:
        raise UserError(f"--tokens: must be a positive integer, got {args.tokens}")
    values = {f: getattr(args, f) for f in _FIELDS}
    if args.context_size < 4:
        raise UserError(f"--context-size: must be >= 4, got {args.context_size}")
    values["n_seq"] = -(-args.tokens // args.context_size)
    try:
        return SynthConfig(**values)
    except ValueError as err:
        field = str(err).split(":")[0]
        opt = _FIELDS.get(field, "--tokens" if field == "n_seq" else f"--{field.replace('_', '-')}")
        raise UserError(f"{opt}: {str(err).split(': ', 1)[-1]}") from err


def cmd_synth(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    truth = generate_synthetic(out, cfg, overwrite=args.overwrite)
    st_path, js_path = truth_paths(out)
    counts = Counter(truth.kinds)
    by_kind = ", ".join(f"{k} {n}" for k, n in counts.items())
    sys.stdout.write(
        f"cache written: {out} ({cfg.n_seq} sequences x {cfg.context_size} tokens, d_model {cfg.d_model})\n"
        f"planted truth: {st_path}, {js_path}\n"
        f"planted features: {truth.n_features} ({by_kind}); noise std {cfg.noise_std}\n"
        f"planted L0: {truth.planted_l0:.3f} per unmasked token\n"
    )
    return 0
