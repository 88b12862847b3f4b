"""The cache holds what the model computes: compared with a plain `transformers` forward pass."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel

from activations.cache import ActivationCache
from activations.model import embedded_model_dir
from tests.helpers.common import error_line, run_cli


def test_activations_equal_transformers_hidden_states(small_cache):
    cache = ActivationCache.open(small_cache)
    model = AutoModel.from_pretrained(str(embedded_model_dir()))
    model.eval()
    tokens = torch.from_numpy(cache.tokens.astype(np.int64))
    attention = torch.from_numpy((cache.doc_ids >= 0).astype(np.int64))
    with torch.no_grad():
        hidden = model(input_ids=tokens, attention_mask=attention, output_hidden_states=True).hidden_states
    for layer in (1, 3):
        ours = cache.activations(f"blocks.{layer}.hook_resid_post")[: cache.n_seq]
        theirs = hidden[layer + 1].numpy()  # hidden_states[0] is the embedding output
        keep = attention.numpy().astype(bool)
        np.testing.assert_allclose(ours[keep], theirs[keep], atol=2e-4, rtol=1e-4)


def test_float16_cache_matches_to_half_precision(tmp_path, corpus_dir):
    from activations.build import CacheJob, build_cache

    out = build_cache(
        CacheJob(out=tmp_path / "h.h5", corpus=str(corpus_dir), context_size=32, max_tokens=200)
    )
    cache = ActivationCache.open(out)
    assert cache.activations("blocks.3.hook_resid_post").dtype == np.float16
    model = AutoModel.from_pretrained(str(embedded_model_dir()))
    tokens = torch.from_numpy(cache.tokens.astype(np.int64))
    attention = torch.from_numpy((cache.doc_ids >= 0).astype(np.int64))
    with torch.no_grad():
        theirs = (
            model(input_ids=tokens, attention_mask=attention, output_hidden_states=True)
            .hidden_states[4]
            .numpy()
        )
    ours = cache.read_acts("blocks.3.hook_resid_post", 0, cache.n_seq)
    keep = attention.numpy().astype(bool)
    # float16 has an 11-bit significand: relative error <= 2^-11 of the value
    np.testing.assert_allclose(ours[keep], theirs[keep], rtol=2**-10, atol=1e-3)


def test_sequences_tokens_and_mask(small_cache):
    cache = ActivationCache.open(small_cache)
    tok = cache.tokens
    # every sequence starts with [CLS] (101) and the mask excludes it; [SEP] (102) is masked wherever it appears
    assert (tok[:, 0] == 101).all()
    assert cache.mask[:, 0].all()
    assert cache.mask[tok == 102].all()
    assert not cache.mask[(tok != 101) & (tok != 102) & (cache.doc_ids >= 0)].any()
    assert cache.vocab[101] == "[CLS]"
    # positions count up within a document
    d, p = cache.doc_ids[0], cache.positions[0]
    inner = (p >= 0)[1:-1]
    assert (np.diff(p[1:-1][inner]) == 1).all() or len(set(d[1:-1])) > 1
    ctx = cache.context(0, 5, width=3)
    assert ctx.tokens[ctx.center] == cache.vocab[tok[0, 5]]
    assert len(ctx.tokens) == 7
    assert cache.meta.complete and cache.meta.model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_model_kind_is_read_from_the_loaded_class():
    from transformers import GPT2Config, GPT2LMHeadModel

    from activations.model import _is_causal_lm, load_model

    assert load_model("default").is_causal_lm is False  # MiniLM loads as BertForMaskedLM: an encoder
    tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8))
    assert _is_causal_lm(tiny) is True


def test_encoder_downstream_effect_is_embedding_cosine(tmp_path, small_cache):
    """Training on a real MiniLM cache records the splice's effect as the cosine of mean-pooled embeddings."""
    import json

    from sae_training.config import TrainConfig
    from sae_training.trainer import train

    cfg = TrainConfig(
        seeds=(0,),
        width=96,
        k=8,
        tokens=4096,
        batch_size=256,
        checkpoint_every=0,
        eval_fraction=0.2,
        downstream_seqs=4,
        norm_sample_tokens=1024,
        eval_tokens=2048,
    )
    run = train(cfg, small_cache, tmp_path / "run", hook="blocks.1.hook_resid_post", progress=False)
    down = json.loads((run / "run.json").read_text())["metrics"]["per_seed"]["0"]["downstream"]
    assert set(down) >= {"embedding_cosine"} and "ce_recovered" not in down
    assert 0.0 < down["embedding_cosine"] < 1.0


def test_random_init_copy_is_reproducible_and_different():
    """`random-init:MODEL` (the labelability control) has the model's shape but fresh, seeded weights."""
    from activations.model import capture, load_model

    trained, rnd, again = (
        load_model("default"),
        load_model("random-init:default"),
        load_model("random-init:default"),
    )
    assert rnd.model_id == "random-init:sentence-transformers/all-MiniLM-L6-v2"
    assert rnd.fingerprint() == again.fingerprint() != trained.fingerprint()
    assert rnd.vocab() == trained.vocab() and rnd.d_model == trained.d_model
    x = torch.randint(1000, 3000, (2, 12))
    m = torch.ones_like(x)
    a = capture(trained, x, m, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
    b = capture(rnd, x, m, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
    c = capture(again, x, m, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
    assert torch.equal(b, c) and not torch.allclose(a, b, atol=1e-2)
    # C7's copy for the control's own cache is a second draw (init seed 1): same shape, other weights
    other = load_model("random-init:default", init_seed=1)
    assert other.fingerprint() not in (rnd.fingerprint(), trained.fingerprint())
    d = capture(other, x, m, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
    assert d.shape == b.shape and not torch.allclose(b, d, atol=1e-2)


def test_control_config_swaps_only_the_model():
    from features.cli.pipeline import control_config, load_config

    cfg = load_config(None)
    ctl = control_config(cfg)
    assert ctl["cache"]["model"] == "random-init:default"
    assert {k: v for k, v in ctl["cache"].items() if k != "model"} == {
        k: v for k, v in cfg["cache"].items() if k != "model"
    }
    assert ctl["train"] == cfg["train"] and ctl["score"] == cfg["score"]
    assert cfg["cache"]["model"] == "default"  # the caller's config is left alone


def test_a_random_init_control_of_a_model_that_cannot_load_is_one_line(tmp_path):
    """`xenofeat run --control` caches `random-init:MODEL`; a MODEL that is no model is one line, nothing written."""
    not_a_model = tmp_path / "empty-model-dir"
    not_a_model.mkdir()
    out = tmp_path / "control" / "cache.h5"
    res = run_cli("cache", "--model", f"random-init:{not_a_model}", "--max-tokens", "1000", "--out", str(out))
    line = error_line(res)
    assert line.startswith(f"xenofeat: error: --model: cannot load 'random-init:{not_a_model}'"), line
    assert not out.exists()
