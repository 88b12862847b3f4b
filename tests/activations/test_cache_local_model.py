"""The path real users take: a Hugging Face model and data set from local directories (here a tiny random GPT-2
and a JSONL data set, both made in the test), cached through the same CLI, with no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.common import PROSE, run_cli


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A random-weight 3-layer GPT-2 with a word-level tokenizer, saved like a hub snapshot."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for p in PROSE for w in p.replace(".", " .").replace(",", " ,").split()})
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=3,
            n_embd=32,
            n_head=2,
            n_positions=64,
            vocab_size=len(vocab),
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    d = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def jsonl_dataset(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ds")
    with (d / "train.jsonl").open("w") as fh:
        for i in range(30):
            fh.write(json.dumps({"body": " ".join(PROSE[(i + j) % len(PROSE)] for j in range(2))}) + "\n")
    return d


def test_cache_local_causal_model_and_local_dataset(tmp_path, gpt2_dir, jsonl_dataset):
    from transformers import GPT2LMHeadModel

    from activations.cache import ActivationCache
    from activations.model import load_model

    out = tmp_path / "gpt2.h5"
    r = run_cli(
        "cache",
        "--model",
        str(gpt2_dir),
        "--corpus",
        f"hf:{jsonl_dataset}",
        "--text-field",
        "body",
        "--hook",
        "blocks.1.hook_resid_post",
        "--context-size",
        "16",
        "--dtype",
        "float32",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cache = ActivationCache.open(out)
    assert cache.meta.model_id == str(gpt2_dir)
    assert len({int(d) for d in cache.doc_ids.ravel() if d >= 0}) == 30
    # causal LM: sequences start with BOS, and BOS is masked out
    assert (cache.tokens[:, 0] == 0).all() and cache.mask[:, 0].all()
    assert load_model(str(gpt2_dir)).is_causal_lm
    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    tokens = torch.from_numpy(cache.tokens.astype(np.int64))
    attn = torch.from_numpy((cache.doc_ids >= 0).astype(np.int64))
    with torch.no_grad():
        hidden = hf(input_ids=tokens, attention_mask=attn, output_hidden_states=True).hidden_states
    # blocks.1.hook_resid_post is the output of the second block: hidden_states[2] (the last layer's
    # hidden_states[-1] has ln_f applied in GPT-2, so compare the untouched middle of the stack)
    keep = attn.numpy().astype(bool)
    np.testing.assert_allclose(
        cache.read_acts("blocks.1.hook_resid_post", 0, cache.n_seq)[keep],
        hidden[2].numpy()[keep],
        atol=1e-4,
        rtol=1e-4,
    )
