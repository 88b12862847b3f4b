"""The training configuration of an SAE ensemble: one frozen `Settings` dataclass, validated once, loadable from TOML.

`TrainConfig` is declared with `activations.settings` (each field's range and help; cross-field rules in `check()`)
and names options the way the CLI does (`--k` is `k`, `--batch-size` is `batch_size`); every `ValueError` raised
here starts with the option at fault, so the CLI can pass it on as a one-line `UserError`. Sizes that depend on the
cache (the width from `expansion` and d_in) are checked by `resolve(d_in)`. `PRESETS` names settings that differ
from the defaults for a reason (`small-corpus`: what `xenofeat run` trains with).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from activations.devices import device_problem
from activations.settings import (
    SettingError,
    Settings,
    choice,
    integer,
    integers,
    number,
    option_name,
    switch,
    text,
    toml_value,
)

# our architecture names -> sae-lens training-registry names
ARCHS: dict[str, str] = {
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "standard": "standard",
    "gated": "gated",
    "matryoshka": "matryoshka_batchtopk",
}
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")

# beyond these a value is a typo, not a plan (a width of 2^24 latents is 25 GiB of decoder at d_in 384)
MAX_WIDTH = 1 << 24
MAX_BATCH = 1 << 20
MAX_TOKENS = 10**13
# torch.manual_seed and numpy take seeds up to 2^64 - 1; int64 keeps them exact in every file they are written to
MAX_SEED = 2**63 - 1
# the normalisation sample is drawn by cycling over the cache until it is full: beyond this it is a typo that hangs
MAX_NORM_SAMPLE = 1 << 24


class TrainConfigError(ValueError):
    """A bad training setting; the message starts with the option at fault (`--k: ...`)."""


@dataclass(frozen=True)
class Preset:
    """A named set of training settings that differ from the defaults, and why."""

    values: dict[str, Any]
    reason: str


PRESETS: dict[str, Preset] = {
    "small-corpus": Preset(
        {"tokens": 1_500_000, "lr": 1e-3, "dead_after_tokens": 200_000, "checkpoint_every": 500_000},
        "for a corpus of a few hundred thousand tokens trained in minutes on a CPU (`xenofeat run`'s embedded "
        "default, ~430k tokens): 1.5M tokens is ~3.5 epochs, which a learning rate of 1e-3 (not 3e-4) converges "
        "in; a latent silent for 200k tokens (half an epoch, not 1M) counts as dead so that AuxK revives it within "
        "the short run; a checkpoint every 500k tokens so an interruption loses at most a third of it",
    ),
}
"""Named presets (`TrainConfig.preset(name)`); the defaults suit corpora of millions of tokens."""


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Everything that determines a training run (besides the cache and the hook)."""

    arch: str = choice("topk", *ARCHS)
    """SAE architecture: topk, batchtopk, jumprelu, standard, gated or matryoshka (sae-lens's classes)."""
    width: int | None = integer(None, 1, optional=True)
    """Number of latents (d_sae); overrides `expansion` when set."""
    expansion: float = number(8.0, 0.0, lo_open=True)
    """d_sae = round(expansion x d_in) when `width` is not set."""
    k: int = integer(32, 1, hi=MAX_TOKENS)
    """Active latents per token (topk), or on average per token (batchtopk, matryoshka)."""
    l1: float = number(0.05, 0.0)
    """L1 coefficient (standard, gated); in units of the normalised activations (unit mean squared norm)."""
    l0_coefficient: float = number(1.0, 0.0)
    """Sparsity coefficient of jumprelu's L0 loss."""
    target_l0: float | None = number(None, 0.0, lo_open=True, optional=True)
    """jumprelu only: target L0 for sae-lens's quadratic sparsity loss (otherwise its 'step' L0 loss is used)."""
    matryoshka_widths: tuple[int, ...] = integers(())
    """matryoshka only: nested widths; empty means d_sae/8, d_sae/4, d_sae/2 (d_sae is always the last)."""
    seeds: tuple[int, ...] = integers((0, 1, 2), 0, MAX_SEED, min_len=1)
    """One ensemble member per seed: its initialisation and its order of batches."""
    tokens: int = integer(2_000_000, 1, hi=MAX_TOKENS)
    """Training tokens per member."""
    batch_size: int = integer(4096, 1, hi=MAX_TOKENS)
    """Tokens per training step."""
    lr: float = number(3e-4, 0.0, lo_open=True)
    """Adam learning rate."""
    lr_warmup_steps: int = integer(0, 0, hi=MAX_TOKENS)
    """Linear warm-up steps of the learning rate."""
    lr_decay_fraction: float = number(0.2, 0.0, 1.0)
    """Fraction of the steps, at the end, over which the learning rate decays linearly to 0."""
    adam_beta1: float = number(0.9, 0.0, 1.0, hi_open=True)
    """Adam beta1."""
    adam_beta2: float = number(0.999, 0.0, 1.0, hi_open=True)
    """Adam beta2."""
    grad_clip: float = number(1.0, 0.0, lo_open=True)
    """Gradient-norm clip (sae-lens's trainer uses 1.0)."""
    aux_coefficient: float = number(1.0, 0.0)
    """Weight of the TopK auxiliary (AuxK) loss that revives dead latents."""
    dead_after_tokens: int = integer(1_000_000, 1, hi=MAX_TOKENS)
    """A latent that has not fired for this many tokens counts as dead (and feeds the AuxK loss)."""
    warmup_steps_sparsity: int = integer(0, 0, hi=MAX_TOKENS)
    """Linear warm-up steps of the sparsity coefficient (l1 / l0)."""
    checkpoint_every: int = integer(1_000_000, 0, hi=MAX_TOKENS)
    """Save a resumable checkpoint every this many tokens (0: only at the end)."""
    eval_fraction: float = number(0.05, 0.0, 1.0, lo_open=True, hi_open=True)
    """The last fraction of the cache's sequences is held out for the final metrics."""
    eval_tokens: int = integer(200_000, 1, hi=MAX_TOKENS)
    """At most this many held-out tokens are used for the final metrics."""
    pool_batches: int = integer(16, 1, hi=MAX_TOKENS)
    """Batches per shuffle pool: a pool is read once and served to every member in its own random order."""
    data_seed: int = integer(0, 0, hi=MAX_SEED)
    """Seed of the order in which cache chunks are read into pools (shared by the members)."""
    norm_sample_tokens: int = integer(65_536, 1, hi=MAX_NORM_SAMPLE)
    """Tokens used to estimate the normalisation factor."""
    log_every: int = integer(50, 1, hi=MAX_TOKENS)
    """Steps between lines of the metrics log."""
    downstream_seqs: int = integer(16, 0, hi=MAX_TOKENS)
    """Held-out sequences used for the downstream (splice) metric; 0 turns it off."""
    max_memory_gb: float | None = number(None, 0.0, lo_open=True, optional=True)
    """Memory budget for the up-front estimate; default: the machine's available memory."""
    deterministic: bool = switch(True)
    """Bit-reproducible training at any thread count (torch's deterministic algorithms; parallel float reductions in
    the sparse backward otherwise differ by ~1e-7 per step and drift). About 10% slower on CPU; false for speed.
    On CUDA the TopK step takes a dense backward (deterministic kernels) and cuBLAS a fixed workspace."""
    device: str = text("cpu")
    """Torch device of training: cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:N, or auto (cuda where a GPU is
    present). Not part of a run's identity: a run started on one device may be resumed on another."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra architecture fields passed to the sae-lens training config verbatim (advanced)."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except SettingError as err:
            shown = toml_value(err.value) if isinstance(err.value, int | float | str) else repr(err.value)
            raise TrainConfigError(f"{option_name(err.key)}: {shown} {err.expected}") from None

    def check(self) -> None:
        """Rules across fields, and values beyond which a setting is a typo, not a plan."""
        if self.width is not None and self.width > MAX_WIDTH:
            raise SettingError("width", self.width, f"is absurd (at most {MAX_WIDTH})")
        if self.width is not None and self.k >= self.width:
            raise SettingError("k", self.k, f"must be smaller than the width ({self.width})")
        if self.batch_size > MAX_BATCH:
            raise SettingError("batch_size", self.batch_size, f"is absurd (at most {MAX_BATCH})")
        if self.tokens > MAX_TOKENS:
            raise SettingError("tokens", self.tokens, f"is absurd (at most {MAX_TOKENS})")
        if self.tokens < self.batch_size:
            raise SettingError("tokens", self.tokens, f"is less than one batch ({self.batch_size})")
        if len(set(self.seeds)) != len(self.seeds):
            raise SettingError("seeds", list(self.seeds), "must be distinct")
        problem = device_problem(
            self.device
        )  # whether the device exists here is checked when training starts
        if problem is not None:
            raise SettingError("device", self.device, problem)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The config of a named preset (`PRESETS`), with `overrides` on top."""
        if name not in PRESETS:
            raise TrainConfigError(f"--preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name].values, **overrides})

    # -- derived values ------------------------------------------------------------------------------------------
    def d_sae(self, d_in: int) -> int:
        """The number of latents for inputs of width d_in."""
        return self.width if self.width is not None else max(1, round(self.expansion * d_in))

    def resolve(self, d_in: int) -> int:
        """Check the sizes that depend on d_in and return d_sae (ValueError naming the option otherwise)."""
        d_sae = self.d_sae(d_in)
        opt = "--width" if self.width is not None else "--expansion"
        if d_sae > MAX_WIDTH:
            raise ValueError(f"{opt}: {d_sae} latents is absurd (at most {MAX_WIDTH})")
        if self.arch in TOPK_FAMILY and self.k >= d_sae:
            raise ValueError(f"--k: k={self.k} must be smaller than the width ({d_sae})")
        if self.target_l0 is not None and self.target_l0 > d_sae:
            raise ValueError(f"--target-l0: {self.target_l0} exceeds the width ({d_sae})")
        widths = self.matryoshka_widths
        if widths and (list(widths) != sorted(set(widths)) or widths[-1] > d_sae or widths[0] <= 0):
            raise ValueError(f"--matryoshka-widths: must increase strictly and stay within (0, {d_sae}]")
        return d_sae

    @property
    def steps(self) -> int:
        """Training steps per member (the last partial batch is dropped)."""
        return self.tokens // self.batch_size

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues: all but the device."""
        d = self.to_dict()
        del d["device"]
        return d

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["matryoshka_widths"] = list(self.matryoshka_widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys (naming them and `source`)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict of TrainConfig fields (keys may use '-' or '_'); ValueError if bad."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ValueError(f"--config: {path} does not exist") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config: {path} is not valid TOML ({err})") from err
    # a [train] table is accepted so that one file can configure several stages
    table = raw.get("train", raw) if isinstance(raw.get("train"), dict) else raw
    out = {str(k).replace("-", "_"): v for k, v in table.items()}
    known = {f.name for f in fields(TrainConfig)} | {"cache", "hook", "out"}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"--config: {path}: unknown key(s) {', '.join(map(repr, unknown))}")
    return out
