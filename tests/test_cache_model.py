"""The cache holds what the model computes: compared with a plain `transformers` forward pass."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel

from activations.cache import ActivationCache
from activations.model import embedded_model_dir


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

    out = build_cache(CacheJob(out=tmp_path / "h.h5", corpus=str(corpus_dir), context_size=32, max_tokens=200))
    cache = ActivationCache.open(out)
    assert cache.activations("blocks.3.hook_resid_post").dtype == np.float16
    model = AutoModel.from_pretrained(str(embedded_model_dir()))
    tokens = torch.from_numpy(cache.tokens.astype(np.int64))
    attention = torch.from_numpy((cache.doc_ids >= 0).astype(np.int64))
    with torch.no_grad():
        theirs = model(input_ids=tokens, attention_mask=attention, output_hidden_states=True).hidden_states[4].numpy()
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
