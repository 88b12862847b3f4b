"""The fast capture path (`activations.fast_capture`) gives the bridge's values, and falls back where it cannot.

Compared with `capture(..., backend="bridge")` (TransformerLens's `run_with_cache`) on the embedded MiniLM, its
random-init control, and tiny random decoders of every architecture in `LAYER_LISTS`, saved to a local directory and
loaded through `load_model` the way users load theirs. Padded positions are compared too (the cache stores them).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from activations import format as fmt
from activations.fast_capture import LAYER_LISTS
from activations.model import capture, load_model
from tests.helpers.common import PROSE, run_cli

RESID = [f"blocks.{layer}.hook_resid_{kind}" for layer in (0, 3, 5) for kind in ("pre", "post")]


def prose_batch(tokenizer, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """The prose sentences, right-padded to `length`: rows of different lengths, as the packer's last batch."""
    enc = tokenizer(PROSE, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    mask = enc["attention_mask"]
    assert (mask == 0).any() and (mask == 1).all(dim=0)[:5].all()  # some padding, no row empty
    return enc["input_ids"], mask


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for h in a:
        assert a[h].dtype == b[h].dtype and a[h].shape == b[h].shape, h
        assert torch.equal(a[h], b[h]), (h, (a[h] - b[h]).abs().max().item())


@pytest.fixture(scope="module")
def minilm():
    return load_model("default")


def test_fast_path_equals_the_bridge_bit_for_bit_on_the_default(minilm):
    tokens, mask = prose_batch(minilm.tokenizer)
    bridge = capture(minilm, tokens, mask, RESID, backend="bridge")
    assert minilm.fast is not None and minilm.fast.covers(RESID, mask)
    fast = minilm.fast(tokens, mask, RESID)
    assert_bit_equal(fast, bridge)
    # residual stream: the input of layer 3 is the output of layer 2, which is not the output of layer 3
    two = capture(minilm, tokens, mask, ["blocks.2.hook_resid_post"], backend="bridge")
    assert torch.equal(fast["blocks.3.hook_resid_pre"], two["blocks.2.hook_resid_post"])
    assert not torch.equal(fast["blocks.3.hook_resid_pre"], fast["blocks.3.hook_resid_post"])
    # `auto` (the default) checks its first batch against the bridge, then keeps to the fast path
    assert_bit_equal(capture(minilm, tokens, mask, RESID), bridge)
    assert minilm.fast.state == "exact"
    one = ["blocks.5.hook_resid_post"]
    assert_bit_equal(
        capture(minilm, tokens[:2], mask[:2], one), capture(minilm, tokens[:2], mask[:2], one, "bridge")
    )


def test_fast_path_runs_only_the_layers_it_needs(minilm):
    tokens, mask = prose_batch(minilm.tokenizer)
    ran: list[int] = []
    handles = [
        layer.register_forward_pre_hook(lambda _m, _a, i=i: ran.append(i))
        for i, layer in enumerate(minilm.fast.layers)
    ]
    try:
        minilm.fast(tokens, mask, ["blocks.1.hook_resid_post", "blocks.3.hook_resid_pre"])
    finally:
        for h in handles:
            h.remove()
    assert ran == [
        0,
        1,
        2,
        3,
    ]  # layer 3 starts (its input is the hook) and is stopped before computing anything


def test_hooks_and_masks_the_fast_path_does_not_cover_go_through_the_bridge(minilm):
    tokens, mask = prose_batch(minilm.tokenizer)
    mixed = ["blocks.3.hook_resid_post", "blocks.2.hook_mlp_out"]
    assert not minilm.fast.covers(mixed, mask)
    out = capture(minilm, tokens, mask, mixed)
    assert_bit_equal(out, capture(minilm, tokens, mask, mixed, backend="bridge"))
    # a left-padded row: the bridge derives position ids for it, so the fast path declines
    left = torch.cat([torch.zeros_like(mask[:, :3]), mask[:, :-3]], dim=1)
    hook = ["blocks.3.hook_resid_post"]
    assert not minilm.fast.covers(hook, left)
    assert_bit_equal(
        capture(minilm, tokens, left, hook), capture(minilm, tokens, left, hook, backend="bridge")
    )
    assert not minilm.fast.covers(["hook_embed"], mask)
    with pytest.raises(ValueError, match="backend"):
        capture(minilm, tokens, mask, hook, backend="fast")


def test_random_init_control_takes_the_fast_path_exactly():
    model = load_model("random-init:default")
    tokens, mask = prose_batch(model.tokenizer)
    hooks = ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"]
    bridge = capture(model, tokens, mask, hooks, backend="bridge")
    assert_bit_equal(capture(model, tokens, mask, hooks), bridge)
    assert model.fast.state == "exact"


def save_tiny(kind: str, folder: Path) -> Path:
    """A random 3-layer model of architecture `kind` (d 32) with a word-level tokenizer, saved like a snapshot."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(62)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<s>", unk_token="<unk>", pad_token="<s>"
    )
    ids = {"vocab_size": 64, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
    gqa = {**sizes, "num_key_value_heads": 2, "max_position_embeddings": 64}
    configs = {
        "gpt2": lambda: transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=64, **ids),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(**sizes, max_position_embeddings=64, **ids),
        "llama": lambda: transformers.LlamaConfig(**gqa, **ids),
        "mistral": lambda: transformers.MistralConfig(**gqa, **ids),
        "qwen2": lambda: transformers.Qwen2Config(**gqa, **ids),
        "gemma": lambda: transformers.GemmaConfig(**gqa, head_dim=8, **ids),
        "gemma2": lambda: transformers.Gemma2Config(**gqa, head_dim=8, **ids),
    }
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(configs[kind]())
    d = folder / kind
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d


def random_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(2, 64, (3, 16), generator=g)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[2, 11:] = 0  # the last row padded on the right, as the packer pads the last sequence
    return tokens, mask


DECODERS = sorted(k for k in LAYER_LISTS if k != "bert")


@pytest.mark.parametrize("kind", DECODERS)
def test_decoders_from_a_local_directory_capture_the_bridge_values(tmp_path, kind):
    model = load_model(str(save_tiny(kind, tmp_path)))
    assert model.bridge.original_model.config.model_type == kind
    tokens, mask = random_batch()
    hooks = [f"blocks.{layer}.hook_resid_{k}" for layer in range(3) for k in ("pre", "post")]
    bridge = capture(model, tokens, mask, hooks, backend="bridge")
    fast = model.fast(tokens, mask, hooks)
    if kind == "gpt2":
        # the bridge recomputes GPT-2's attention from q, k and v split out of the joint c_attn (its
        # JointQKVAttentionBridge), so its values differ from Hugging Face's own attention by float32 rounding:
        # a few ulps of activations of order 1. (If this starts being bit-equal, the bridge changed: update
        # activations/fast_capture.py's docstring.)
        for h in hooks:
            torch.testing.assert_close(fast[h], bridge[h], rtol=1e-6, atol=1e-6)
        assert any(not torch.equal(fast[h], bridge[h]) for h in hooks)
    else:
        assert_bit_equal(fast, bridge)
    # `auto` keeps the fast path only where the first batch was bit-equal; what it returns is always the bridge's
    assert_bit_equal(capture(model, tokens, mask, hooks), bridge)
    assert model.fast.state == ("off" if kind == "gpt2" else "exact")
    again = ["blocks.1.hook_resid_post"]
    assert_bit_equal(
        capture(model, tokens, mask, again), capture(model, tokens, mask, again, backend="bridge")
    )


ARGS = ["--context-size", "32", "--batch-size", "2", "--max-tokens", "800"]


def test_a_cache_started_on_the_bridge_resumes_on_the_fast_path_to_the_same_bytes(tmp_path, corpus_dir):
    ref, out = tmp_path / "auto.h5", tmp_path / "mixed.h5"
    base = ["cache", "--corpus", str(corpus_dir), *ARGS, "--hook", "blocks.1.hook_resid_post", "--hook"]
    r = run_cli(*base, "blocks.4.hook_resid_pre", "--out", str(ref))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(
        *base,
        "blocks.4.hook_resid_pre",
        "--out",
        str(out),
        "--backend",
        "bridge",
        env={"XENOFEAT_FAULT": "cache.after_chunk:3"},
    )
    assert r.returncode != 0 and "fault injected at cache.after_chunk" in r.stderr
    r = run_cli("-v", *base, "blocks.4.hook_resid_pre", "--out", str(out), "--resume")  # --backend auto
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fast capture: the first batch equals the bridge's bit for bit" in r.stderr
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        assert a.attrs[fmt.A_SETTINGS] == b.attrs[fmt.A_SETTINGS]
        assert bool(b.attrs[fmt.A_COMPLETE]) and int(b.attrs[fmt.A_SEQS_WRITTEN]) > 6
        hooks = ["blocks.1.hook_resid_post", "blocks.4.hook_resid_pre"]
        for name in (*fmt.ROW_DATASETS, *(fmt.acts_path(h) for h in hooks)):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
