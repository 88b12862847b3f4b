"""The training configuration of an SAE ensemble: one frozen dataclass, validated once, loadable from TOML.

`TrainConfig` names options the way the CLI does (`--k` is `k`, `--batch-size` is `batch_size`); every
`ValueError` raised here starts with the option at fault, so the CLI can pass it on as a one-line `UserError`.
Sizes that depend on the cache (the width from `expansion` and d_in) are checked by `resolve(d_in)`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
L1_FAMILY = ("standard", "gated")

# beyond these a value is a typo, not a plan (a width of 2^24 latents is 25 GiB of decoder at d_in 384)
MAX_WIDTH = 1 << 24
MAX_BATCH = 1 << 20
MAX_TOKENS = 10**13
# torch.manual_seed and numpy take seeds up to 2^64 - 1; int64 keeps them exact in every file they are written to
MAX_SEED = 2**63 - 1
# the normalisation sample is drawn by cycling over the cache until it is full: beyond this it is a typo that hangs
MAX_NORM_SAMPLE = 1 << 24
# integer counts of tokens or steps: checked for type and bounded like --tokens, so no value overflows later
_COUNTS = (
    "tokens",
    "eval_tokens",
    "dead_after_tokens",
    "checkpoint_every",
    "lr_warmup_steps",
    "warmup_steps_sparsity",
    "log_every",
    "pool_batches",
    "downstream_seqs",
    "k",
    "batch_size",
)


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (besides the cache and the hook)."""

    arch: str = "topk"
    """SAE architecture: topk, batchtopk, jumprelu, standard, gated or matryoshka (sae-lens's classes)."""
    width: int | None = None
    """Number of latents (d_sae); overrides `expansion` when set."""
    expansion: float = 8.0
    """d_sae = round(expansion x d_in) when `width` is not set."""
    k: int = 32
    """Active latents per token (topk), or on average per token (batchtopk, matryoshka)."""
    l1: float = 0.05
    """L1 coefficient (standard, gated); in units of the normalised activations (unit mean squared norm)."""
    l0_coefficient: float = 1.0
    """Sparsity coefficient of jumprelu's L0 loss."""
    target_l0: float | None = None
    """jumprelu only: target L0 for sae-lens's quadratic sparsity loss (otherwise its 'step' L0 loss is used)."""
    matryoshka_widths: tuple[int, ...] = ()
    """matryoshka only: nested widths; empty means d_sae/8, d_sae/4, d_sae/2 (d_sae is always the last)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One ensemble member per seed: its initialisation and its order of batches."""
    tokens: int = 2_000_000
    """Training tokens per member."""
    batch_size: int = 4096
    """Tokens per training step."""
    lr: float = 3e-4
    """Adam learning rate."""
    lr_warmup_steps: int = 0
    """Linear warm-up steps of the learning rate."""
    lr_decay_fraction: float = 0.2
    """Fraction of the steps, at the end, over which the learning rate decays linearly to 0."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    grad_clip: float = 1.0
    """Gradient-norm clip (sae-lens's trainer uses 1.0)."""
    aux_coefficient: float = 1.0
    """Weight of the TopK auxiliary (AuxK) loss that revives dead latents."""
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many tokens counts as dead (and feeds the AuxK loss)."""
    warmup_steps_sparsity: int = 0
    """Linear warm-up steps of the sparsity coefficient (l1 / l0)."""
    checkpoint_every: int = 1_000_000
    """Save a resumable checkpoint every this many tokens (0: only at the end)."""
    eval_fraction: float = 0.05
    """The last fraction of the cache's sequences is held out for the final metrics."""
    eval_tokens: int = 200_000
    """At most this many held-out tokens are used for the final metrics."""
    pool_batches: int = 16
    """Batches per shuffle pool: a pool is read once and served to every member in its own random order."""
    data_seed: int = 0
    """Seed of the order in which cache chunks are read into pools (shared by the members)."""
    norm_sample_tokens: int = 65_536
    """Tokens used to estimate the normalisation factor."""
    log_every: int = 50
    """Steps between lines of the metrics log."""
    downstream_seqs: int = 16
    """Held-out sequences used for the downstream (splice) metric; 0 turns it off."""
    max_memory_gb: float | None = None
    """Memory budget for the up-front estimate; default: the machine's available memory."""
    deterministic: bool = True
    """Bit-reproducible training at any thread count (torch's deterministic algorithms; parallel float reductions in
    the sparse backward otherwise differ by ~1e-7 per step and drift). About 10% slower on CPU; false for speed."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra architecture fields passed to the sae-lens training config verbatim (advanced)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"--arch: {self.arch!r} is not one of {', '.join(ARCHS)}")
        self._check_ints()
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "matryoshka_widths", tuple(int(w) for w in self.matryoshka_widths))
        positive = (
            "k",
            "tokens",
            "batch_size",
            "pool_batches",
            "eval_tokens",
            "norm_sample_tokens",
            "log_every",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{_opt(name)}: must be positive, got {getattr(self, name)}")
        for name in ("lr", "expansion", "grad_clip", "dead_after_tokens"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{_opt(name)}: must be positive, got {getattr(self, name)}")
        for name in ("l1", "l0_coefficient", "aux_coefficient", "lr_warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_opt(name)}: must not be negative, got {getattr(self, name)}")
        if self.downstream_seqs < 0:
            raise ValueError(f"--downstream-seqs: must not be negative, got {self.downstream_seqs}")
        if self.width is not None and not 0 < self.width <= MAX_WIDTH:
            raise ValueError(f"--width: {self.width} is absurd or not positive (1 to {MAX_WIDTH})")
        if self.width is not None and self.k >= self.width:
            raise ValueError(f"--k: k={self.k} must be smaller than the width ({self.width})")
        if self.batch_size > MAX_BATCH:
            raise ValueError(f"--batch-size: {self.batch_size} is absurd (at most {MAX_BATCH})")
        if self.tokens > MAX_TOKENS:
            raise ValueError(f"--tokens: {self.tokens} is absurd (at most {MAX_TOKENS})")
        if self.tokens < self.batch_size:
            raise ValueError(f"--tokens: {self.tokens} is less than one batch ({self.batch_size})")
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"--seeds: seeds must be distinct and non-negative, got {list(self.seeds)}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"--eval-fraction: must be in (0, 1), got {self.eval_fraction}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"--lr-decay-fraction: must be in [0, 1], got {self.lr_decay_fraction}")
        if self.target_l0 is not None and not self.target_l0 > 0:
            raise ValueError(f"--target-l0: must be positive, got {self.target_l0}")
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise ValueError(f"--max-memory-gb: must be positive, got {self.max_memory_gb}")

    def _check_ints(self) -> None:
        """Integer options must be integers within bounds, before any of them reaches torch, numpy or a file."""
        if not isinstance(self.seeds, list | tuple):
            raise ValueError(f"--seeds: must be a list of integers, got {self.seeds!r}")
        for name, values, top in (
            ("seeds", self.seeds, MAX_SEED),
            ("data_seed", (self.data_seed,), MAX_SEED),
            ("norm_sample_tokens", (self.norm_sample_tokens,), MAX_NORM_SAMPLE),
            ("width", () if self.width is None else (self.width,), MAX_WIDTH),
            *((name, (getattr(self, name),), MAX_TOKENS) for name in _COUNTS),
        ):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{_opt(name)}: must be an integer, got {v!r}")
                if v > top:
                    raise ValueError(f"{_opt(name)}: {v} is absurd (at most {top})")
        # a float too: round(inf * d_in) would overflow when the width is derived
        if not math.isfinite(self.expansion):
            raise ValueError(f"--expansion: must be finite, got {self.expansion}")

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
