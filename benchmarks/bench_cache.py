"""Benchmarks of the activation cache: caching throughput, loader throughput and the chunk shape.

Every number is a ratio against a baseline measured in the same process on the same data (these machines are noisy):

1. cache:   tokens/s of the caching loop (forward pass to the hook + float16 conversion + HDF5 append with checksums;
            `--backend auto`, i.e. the fast path) vs a bare forward pass of the same model up to the hook on the same
            batches: through the bridge (stop_at_layer), through the fast path (`activations.fast_capture`: the
            Hugging Face layers with forward hooks), and a plain `transformers` BertModel cut after the same layer
            (with transformers' default sdpa attention, and with the eager attention the bridge loads models with).
2. loader:  training's shuffle pools of 64 batches of 4096 rows from a 1M-token cache (sae_training.data.PoolSchedule:
            random chunk order per epoch + read-ahead thread) vs a plain sequential read of the same file, and vs what
            training consumes (tokens/s of our TopK step at d_in 384, width 3072, k 32, batch 4096).
3. chunks:  sequential and random-chunk read speed for several chunk sizes (picks DEFAULT_CHUNK_BYTES).

    PYTHONPATH=. python benchmarks/bench_cache.py [--tokens 40000] [--loader-tokens 1000000] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch


def bench_caching(n_tokens: int, batch_size: int, repeats: int = 2) -> None:
    from transformers import AutoModel

    from activations.build import CacheJob, _fill
    from activations.corpus import load_corpus
    from activations.model import capture, embedded_model_dir, load_model
    from activations.sequences import pack_corpus
    from activations.writer import CacheWriter

    hook = "blocks.3.hook_resid_post"
    model = load_model("default")
    packed = pack_corpus(load_corpus("default"), model.tokenizer, 128, n_tokens)
    n_seq = packed.tokens.shape[0]
    tokens = torch.from_numpy(packed.tokens.astype(np.int64))
    attn = torch.from_numpy(packed.attention.astype(np.int64))

    def bare_bridge() -> None:
        for a in range(0, n_seq, batch_size):
            capture(model, tokens[a : a + batch_size], attn[a : a + batch_size], [hook], backend="bridge")

    def bare_fast() -> None:
        for a in range(0, n_seq, batch_size):
            capture(model, tokens[a : a + batch_size], attn[a : a + batch_size], [hook], backend="auto")

    def plain_hf(attn_implementation: str | None) -> Callable[[], None]:
        """A plain `transformers` BertModel cut after blocks.3 (the 4th layer): nothing past it is computed."""
        kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        hf = AutoModel.from_pretrained(str(embedded_model_dir()), **kw)
        hf.encoder.layer = hf.encoder.layer[:4]
        hf.eval()

        @torch.no_grad()
        def run() -> None:
            for a in range(0, n_seq, batch_size):
                hf(input_ids=tokens[a : a + batch_size], attention_mask=attn[a : a + batch_size])

        return run

    bare_hf = plain_hf(None)  # transformers' default attention (sdpa)
    # the attention the bridge loads models with (TransformerLens asks for eager attention, and the fast path runs
    # the bridge's own modules): the like-for-like baseline of the fast path
    bare_hf_eager = plain_hf("eager")

    def ours() -> None:
        with tempfile.TemporaryDirectory() as d:
            w = CacheWriter.create(
                Path(d) / "c.h5",
                hooks=[hook],
                d_model=model.d_model,
                context_size=128,
                dtype="float16",
                vocab=model.vocab(),
                model_id=model.model_id,
                model_fingerprint="bench",
                corpus="default",
                corpus_fingerprint=packed.fingerprint,
                settings={},
            )
            job = CacheJob(out=Path(d) / "c.h5", batch_size=batch_size)
            _fill(w, model, packed, [hook], job, progress=False)
            w.finish()

    bare_bridge()  # warm-up
    bare_fast()  # warm-up, and the fast path's one check against the bridge (on its first batch)
    assert model.fast is not None and model.fast.state == "exact", "the fast path is not in use"
    runs = (
        ("bare_bridge", bare_bridge),
        ("bare_fast", bare_fast),
        ("bare_hf", bare_hf),
        ("bare_hf_eager", bare_hf_eager),
        ("ours", ours),
    )
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(repeats):  # interleave to share the machine's noise fairly
        for name, fn in runs:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    n = n_seq * 128
    best = {k: min(v) for k, v in times.items()}
    print(f"caching {n} tokens, batch {batch_size}, {torch.get_num_threads()} threads")
    for k, v in best.items():
        print(f"  {k:14s} {n / v:10.0f} tok/s")
    print(f"  ratio ours / bare bridge forward: {best['bare_bridge'] / best['ours']:.3f}")
    print(f"  ratio ours / bare transformers forward: {best['bare_hf'] / best['ours']:.3f}")
    print(f"  ratio fast path / bare transformers forward: {best['bare_hf'] / best['bare_fast']:.3f}")
    print(
        f"  ratio fast path / bare transformers forward, eager: {best['bare_hf_eager'] / best['bare_fast']:.3f}"
    )
    print(f"  ratio fast path / bare bridge forward: {best['bare_bridge'] / best['bare_fast']:.3f}")


def make_random_cache(
    path: Path, n_tokens: int, d: int = 384, L: int = 128, chunk_bytes: int | None = None
) -> Path:
    from activations.writer import DEFAULT_CHUNK_BYTES, CacheWriter

    n_seq = n_tokens // L
    rng = np.random.default_rng(0)
    w = CacheWriter.create(
        path,
        hooks=["blocks.3.hook_resid_post"],
        d_model=d,
        context_size=L,
        dtype="float16",
        vocab=[f"t{i}" for i in range(100)],
        model_id="bench",
        model_fingerprint="bench",
        corpus="bench",
        corpus_fingerprint="bench",
        settings={},
        overwrite=True,
        chunk_bytes=chunk_bytes or DEFAULT_CHUNK_BYTES,
    )
    block = rng.standard_normal((256, L, d)).astype(np.float16)
    mask = np.zeros((256, L), bool)
    mask[:, 0] = True
    for a in range(0, n_seq, 256):
        n = min(256, n_seq - a)
        z = np.zeros((n, L), np.int32)
        w.append(z, z, z, mask[:n], {"blocks.3.hook_resid_post": block[:n]})
    w.finish()
    return path


def bench_loader(n_tokens: int) -> None:
    from activations.cache import ActivationCache

    with tempfile.TemporaryDirectory() as d:
        path = make_random_cache(Path(d) / "c.h5", n_tokens)
        cache = ActivationCache.open(path)
        t = time.perf_counter()
        rows = sum(c.acts.shape[0] * c.acts.shape[1] for c in cache.scan(prefetch=0))
        seq_rate = rows / (time.perf_counter() - t)
        from sae_training.data import PoolSchedule

        schedule = PoolSchedule(cache, cache.hooks[0], cache.n_seq, pool_tokens=64 * 4096, data_seed=0)
        n_pools = max(1, schedule.epoch_tokens // schedule.pool_tokens)  # one epoch
        t = time.perf_counter()
        rows = 0
        for index, pool in schedule.pools(0):
            rows += len(pool)
            if index + 1 == n_pools:
                break
        shuf_rate = rows / (time.perf_counter() - t)
        # what training consumes: our TopK step at the benchmark configuration
        from sae_training.config import TrainConfig
        from sae_training.saes import build_training_sae
        from sae_training.topk_step import topk_forward

        cfg = TrainConfig(arch="topk", width=3072, k=32, batch_size=4096)
        sae = build_training_sae(cfg, 384, 0)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        x = torch.randn(4096, 384)
        dead = torch.zeros(3072, dtype=torch.bool)
        t = time.perf_counter()
        for _ in range(5):
            out = topk_forward(sae, x, dead)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        train_rate = 5 * 4096 / (time.perf_counter() - t)
    print(f"loader on {n_tokens} tokens (d 384, float16)")
    print(f"  sequential read   {seq_rate:10.0f} tok/s")
    print(f"  shuffle pools     {shuf_rate:10.0f} tok/s  (ratio to sequential {shuf_rate / seq_rate:.2f})")
    print(f"  training consumes {train_rate:10.0f} tok/s  (loader / training {shuf_rate / train_rate:.1f}x)")


def bench_chunks(n_tokens: int) -> None:
    from activations.cache import ActivationCache

    print(f"chunk size sweep on {n_tokens} tokens (d 384, L 128, float16)")
    with tempfile.TemporaryDirectory() as d:
        for mib in (0.25, 0.5, 1, 2, 4, 8):
            path = make_random_cache(Path(d) / f"c{mib}.h5", n_tokens, chunk_bytes=int(mib * 2**20))
            cache = ActivationCache.open(path)
            ds = cache.activations(cache.hooks[0])
            t = time.perf_counter()
            for _c in cache.scan(prefetch=0):
                pass
            seq = cache.n_seq * 128 / (time.perf_counter() - t)
            rng = np.random.default_rng(0)
            c_seq = ds.chunks[0]
            starts = rng.permutation(np.arange(0, cache.n_seq, c_seq))
            t = time.perf_counter()
            for s in starts:
                ds[s : s + c_seq]
            rnd = cache.n_seq * 128 / (time.perf_counter() - t)
            print(
                f"  {mib:5.2f} MiB chunks ({c_seq:3d} seqs): sequential {seq:9.0f} tok/s, random chunks {rnd:9.0f} tok/s"
            )
            cache.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=40_000, help="tokens for the caching benchmark")
    p.add_argument("--loader-tokens", type=int, default=1_000_000)
    p.add_argument("--chunk-tokens", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--repeats", type=int, default=2, help="interleaved rounds of the caching benchmark (best kept)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=("cache", "loader", "chunks"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.only in (None, "cache"):
        bench_caching(a.tokens, a.batch_size, a.repeats)
    if a.only in (None, "loader"):
        bench_loader(a.loader_tokens)
    if a.only in (None, "chunks"):
        bench_chunks(a.chunk_tokens)


if __name__ == "__main__":
    main()
