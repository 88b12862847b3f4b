"""A fast path for residual-stream hooks: the Hugging Face model's own layers, without TransformerLens's wrappers.

`TransformerBridge` replaces the Hugging Face model's submodules in place with wrappers that run hook points around
every layer, attention and MLP (on MiniLM the fast path is 4-11% faster than the bridge; the rest of the gap to a
plain `transformers` forward is its default sdpa attention against the eager attention the bridge loads: see
benchmarks/RESULTS.md). For `blocks.L.hook_resid_post` (the output of layer L) and `blocks.L.hook_resid_pre` (its
input) none of that is needed: `FastCapture.from_bridge` builds a second module tree over the same parameters in
which every wrapper is replaced by the module it wraps (containers are shallow-copied, no tensor is copied), finds
the layer list in `LAYER_LISTS`, and `FastCapture.__call__` runs the base model with forward hooks on those layers,
stopping (by a private exception) right after the last hook it needs.

Exactness is checked, not assumed: `activations.model.capture` compares the fast path with the bridge bit for bit on
the first batch it serves and uses it only if they agree (`FastCapture.confirm`), so the cache's bytes do not depend
on the backend and a cache started with one resumes with the other. Measured (transformers 5.24, transformer-lens
3.9, CPU): bit-equal for BERT (MiniLM), Llama, Gemma, Gemma-2, Mistral, Qwen-2 and GPT-NeoX; not for GPT-2, whose
bridge recomputes attention from split q/k/v (`JointQKVAttentionBridge`) and differs from Hugging Face's own
attention by float32 rounding (~1e-8), so GPT-2 stays on the bridge. Inputs whose attention mask is not right-padded
also stay on the bridge, which derives position ids for them.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

LAYER_LISTS = {
    "bert": "encoder.layer",
    "gpt2": "h",
    "gpt_neox": "layers",
    "llama": "layers",
    "mistral": "layers",
    "qwen2": "layers",
    "gemma": "layers",
    "gemma2": "layers",
}
"""Where the list of transformer layers lives under the Hugging Face base model, by `config.model_type`."""

_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
)


class _Stop(Exception):
    """Raised by the hook of the last requested activation: nothing after it is computed."""


def unwrapped(module: nn.Module) -> nn.Module:
    """`module` with every bridge wrapper below it replaced by the module it wraps; parameters are shared.

    Modules with no wrapper below them are returned as they are; the others are shallow copies with their own child
    dict and hook dicts (so hooks registered on the copy never fire in the bridge's tree).
    """
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    while isinstance(module, GeneralizedComponent):
        module = module.original_component
    children = {name: (None if c is None else unwrapped(c)) for name, c in module._modules.items()}
    if all(children[name] is c for name, c in module._modules.items()):
        return module
    plain = copy.copy(module)
    plain._modules = children
    for name in _HOOK_DICTS:
        if name in module.__dict__:
            setattr(plain, name, OrderedDict(getattr(module, name)))
    return plain


def parse_hook(hook: str) -> tuple[int, int] | None:
    """`blocks.L.hook_resid_pre` -> (L, 0), `blocks.L.hook_resid_post` -> (L, 1); None for any other hook."""
    m = _HOOK.match(hook)
    return None if m is None else (int(m.group(1)), 0 if m.group(2) == "pre" else 1)


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of the (B, L) mask is ones then zeros (the bridge then passes no position ids)."""
    if attention_mask.ndim != 2:
        return False
    return not bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any())


@dataclass
class FastCapture:
    """Residual-stream capture from the plain Hugging Face layers of one loaded model."""

    base: nn.Module = field(repr=False)
    """The Hugging Face base model (no LM head), bridge wrappers removed."""
    layers: Sequence[nn.Module] = field(repr=False)
    """Its transformer layers, in order: `blocks.L` is `layers[L]`."""
    state: str = "unchecked"
    """`unchecked` until `confirm` compared it with the bridge; then `exact` (used) or `off` (never used again)."""

    @classmethod
    def from_bridge(cls, bridge: Any) -> FastCapture | None:
        """The fast path for the model `bridge` wraps; None where `LAYER_LISTS` does not know its architecture."""
        hf = bridge.original_model
        path = LAYER_LISTS.get(getattr(getattr(hf, "config", None), "model_type", None) or "")
        if path is None:
            return None
        base = unwrapped(hf).base_model
        layers: Any = base
        for part in path.split("."):
            layers = getattr(layers, part, None)
        if not isinstance(layers, nn.ModuleList) or len(layers) != int(bridge.cfg.n_layers):
            return None
        return cls(base, list(layers))

    def covers(self, hooks: Sequence[str], attention_mask: torch.Tensor) -> bool:
        """Whether this path computes every hook exactly as the bridge would, for this mask."""
        if self.state == "off" or not right_padded(attention_mask):
            return False
        parsed = [parse_hook(h) for h in hooks]
        return bool(parsed) and all(p is not None and p[0] < len(self.layers) for p in parsed)

    @torch.no_grad()
    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, hooks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """{hook: (B, L, d_model)} for hooks that `covers` accepted; only the layers up to the last hook run."""
        wanted: dict[tuple[int, int], list[str]] = {}
        for h in hooks:
            where = parse_hook(h)
            if where is None:
                raise ValueError(f"{h}: not a residual-stream hook (ask `covers` first)")
            wanted.setdefault(where, []).append(h)
        last = max(wanted)  # (layer, 0 = input / 1 = output): the order in which the forward pass meets them
        out: dict[str, torch.Tensor] = {}

        def keep(where: tuple[int, int], value: torch.Tensor) -> None:
            for h in wanted.get(where, ()):
                out[h] = value
            if where == last:
                raise _Stop

        def on_input(layer: int) -> Any:
            def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                keep((layer, 0), args[0] if args else kwargs["hidden_states"])

            return hook

        def on_output(layer: int) -> Any:
            def hook(_m: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
                keep((layer, 1), output[0] if isinstance(output, tuple) else output)

            return hook

        handles = []
        for layer, kind in wanted:
            module = self.layers[layer]
            if kind == 0:
                handles.append(module.register_forward_pre_hook(on_input(layer), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(on_output(layer), with_kwargs=True))
        try:
            self.base(input_ids=tokens, attention_mask=attention_mask)
        except _Stop:
            pass  # the expected way out: every requested activation is in `out`
        finally:
            for handle in handles:
                handle.remove()
        if len(out) != len(set(hooks)):  # a model whose forward skips a layer it was asked for
            raise RuntimeError(f"fast capture: {sorted(set(hooks) - set(out))} were never computed")
        return out

    def confirm(self, fast: dict[str, torch.Tensor], bridge: dict[str, torch.Tensor]) -> bool:
        """Record whether the fast path's first batch equals the bridge's bit for bit (then it is used from now on)."""
        same = all(fast[h].dtype == v.dtype and torch.equal(fast[h], v) for h, v in bridge.items())
        self.state = "exact" if same else "off"
        if same:
            log.debug("fast capture: the first batch equals the bridge's bit for bit; capturing the fast way")
        else:
            log.debug("fast capture differs from the bridge for this model; capturing through the bridge")
        return same
