"""`xenofeat cache synth`: write a synthetic cache with planted ground truth (see synth.py)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from activations.errors import UserError
from activations.settings import SettingError, add_options, given_options, option_name, toml_value
from activations.synth import SynthConfig, truth_paths
from activations.synth_write import generate_synthetic

_DEFAULTS = SynthConfig()

# the SynthConfig fields offered as options (`--d-model` is `d_model`); the rest keep their defaults
_FIELDS = (
    "d_model",
    "context_size",
    "vocab_size",
    "n_token",
    "n_hash",
    "n_hidden",
    "n_dense_pair",
    "n_circle",
    "n_position",
    "n_document",
    "n_anchored",
    "n_rule",
    "freq_max",
    "freq_min",
    "noise_std",
    "seed",
    "dtype",
)


def add_synth_command(cache_sub: argparse._SubParsersAction) -> None:
    """Add `synth` to the subcommands of `xenofeat cache`."""
    q = cache_sub.add_parser(
        "synth",
        help="write a synthetic cache with planted features (ground truth beside it)",
        description="Write a synthetic activation cache whose activations are sparse sums of planted directions "
        "(token-determined, context-hash, hidden-state, a dense antipodal pair, a circle, position, document-level, "
        "token-anchored on a hidden state, rule-decided) plus noise, and the "
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
    add_options(q, SynthConfig, _FIELDS)
    q.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (and its truth files)"
    )
    q.set_defaults(func=cmd_synth)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build the config from the parsed options; a bad value becomes a UserError naming the option."""
    if args.tokens < 1:
        raise UserError(f"--tokens: must be a positive integer, got {args.tokens}")
    values = given_options(args, SynthConfig)
    context_size = values.get("context_size", _DEFAULTS.context_size)
    if context_size < 4:
        raise UserError(f"--context-size: must be >= 4, got {context_size}")
    values["n_seq"] = -(-args.tokens // context_size)
    try:
        return SynthConfig(**values)
    except SettingError as err:
        opt = "--tokens" if err.key == "n_seq" else option_name(err.key)
        raise UserError(f"{opt}: {toml_value(err.value)} {err.expected}") from err


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
