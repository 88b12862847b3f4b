"""The streaming pass of `xenofeat score`: one in-order scan of the cache, encoding with the reference SAE.

Per chunk of sequences (`ActivationCache.scan`): encode the unmasked tokens with the reference SAE (sae-lens, raw
activations in, post-activation codes out), keep the nonzero codes as a sparse chunk, decode, and feed the residual
to the C3 accumulator (`features.criteria.function.FunctionAccumulator`). At the end the chunks are stacked into the
(T, F) csc matrix every per-latent statistic reads, T = n_seq * L flat positions (row = seq * L + pos), masked rows
empty. Memory is bounded by `max_tokens`: O(max_tokens * L0) for the codes plus one chunk of dense activations.
With a `device` (a GPU) the encode and decode run there on a copy of the SAE; the codes and reconstructions come
back to the CPU per batch, so the accumulators and everything after the pass are unchanged.

Antipodal pairs are only known once densities are (after the pass), while the accumulator takes `partner` up front
for its co-firing sums; C3's compute fills those sums from the csc matrix afterwards
(`FunctionAccumulator.set_partner`), which is the same sum.

Under torchrun (`world` distributed) the pass is split by chunk: chunk i (`chunk_ranges`, the same chunks a single
process scans) goes to rank i mod WORLD_SIZE, each rank encodes its chunks into a `PassPart`, and the parts are
all-gathered: every rank stacks the sparse codes in chunk order (the codes are the same as one process's: the same
chunks, encoded in the same batches) and adds the accumulators' sums in rank order. Only the sums change their
order of summation (float64, relative differences ~1e-15). Every rank ends with the whole (T, F) matrix because
every rank scores LBL on some of the latents, which reads their columns over all tokens: memory per rank is what
one process needs, plus the gathered parts in transit.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from activations.cache import ActivationCache
from activations.distributed import World, collected
from activations.loader import prefetched
from features.criteria.function import FunctionAccumulator

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What the streaming pass leaves for the criteria, LBL and the store."""

    acts_csc: sp.csc_matrix  # (T, F) float32 codes of the reference SAE, T = n_seq * L, masked rows empty
    tokens: np.ndarray  # (n_seq, L) int32 of the scored sequences
    doc_ids: np.ndarray  # (n_seq, L) int32
    mask: np.ndarray  # (n_seq, L) bool, True = excluded
    function: FunctionAccumulator  # C3 sums (partner filled in by C3's compute)
    n_tokens: int  # unmasked tokens scored
    sum_sq: float  # Σ ‖x_t‖² over scored tokens
    sum_x: np.ndarray  # (d,) Σ x_t, for the explained variance
    l0: float  # mean active latents per scored token

    @property
    def n_seq(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def explained_variance(self) -> float:
        """1 - SSE / total variance around the mean, over the scored tokens."""
        n = max(self.n_tokens, 1)
        var = self.sum_sq - float(self.sum_x @ self.sum_x) / n
        return 1.0 - self.function.sse_total / max(var, 1e-12)


def seqs_for(cache: ActivationCache, max_tokens: int | None) -> int:
    """Sequences scored for a token cap (whole sequences; all of them when the cap is None or exceeds the cache)."""
    if max_tokens is None:
        return cache.n_seq
    return max(1, min(cache.n_seq, math.ceil(max_tokens / cache.context_size)))


def encode_chunk(sae, x: np.ndarray, batch: int = 4096) -> tuple[sp.csr_matrix, np.ndarray]:  # noqa: ANN001
    """Codes (n, F) as csr float32 and reconstructions (n, d) float32 of raw activations x (n, d), computed on the
    SAE's device."""
    parts, recon = [], np.empty_like(x)
    device = sae.W_dec.device
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(x[s : s + batch]).to(device)  # (b, d)
            codes = sae.encode(xb)  # (b, F) dense, mostly zero
            recon[s : s + batch] = sae.decode(codes).cpu().numpy()
            rows, cols = torch.nonzero(codes, as_tuple=True)
            vals = codes[rows, cols].cpu().numpy().astype(np.float32)
            rows, cols = rows.cpu().numpy(), cols.cpu().numpy()
            parts.append(sp.csr_matrix((vals, (rows, cols)), shape=tuple(codes.shape)))
    out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, sae.cfg.d_sae), dtype=np.float32)
    return out.astype(np.float32), recon


ACC_SUMS = ("sum_a2", "cross", "null_cross", "pair_cofire", "sse_total", "n_tokens")
"""The `FunctionAccumulator` fields that `update` adds to (all other fields are fixed by W_dec and the seed)."""


@dataclass
class PassPart:
    """One process's share of the streaming pass: its chunks' codes and the sums over its tokens."""

    blocks: list[tuple[int, sp.csr_matrix]]  # (first sequence, codes (n*L, F) on the chunk's full grid)
    sums: dict[str, np.ndarray | float | int]  # the accumulator's `ACC_SUMS`
    sum_sq: float
    sum_x: np.ndarray
    n_tokens: int
    nnz: int


def chunk_ranges(cache: ActivationCache, n_seq: int) -> list[tuple[int, int]]:
    """The pass's chunks as sequence ranges [a, b): those of `ActivationCache.scan` (4 HDF5 chunks), cut at n_seq."""
    step = cache.chunk_seqs * 4
    return [(a, min(a + step, n_seq)) for a in range(0, n_seq, step)]


def stream_part(
    cache: ActivationCache,
    hook: str,
    sae,  # noqa: ANN001 - sae_lens.SAE
    ranges: list[tuple[int, int]],
    acc: FunctionAccumulator,
    *,
    progress: bool = True,
) -> PassPart:
    """Encode the chunks `ranges` (in order) into `acc` and a `PassPart`."""
    hook = cache.check_hook(hook)
    L = cache.context_size
    n_latents = acc.W_dec.shape[0]
    blocks: list[tuple[int, sp.csr_matrix]] = []
    sum_sq, sum_x, n_tok, nnz = 0.0, np.zeros(acc.W_dec.shape[1]), 0, 0

    def chunks():  # noqa: ANN202 - read ahead in a thread, as `ActivationCache.scan` does
        for a, b in ranges:
            yield a, cache.read_acts(hook, a, b), cache.mask[a:b]

    bar = tqdm(total=sum(b - a for a, b in ranges) * L, desc="encoding", unit="tok", unit_scale=True,
               disable=not progress)  # fmt: skip
    for a, chunk_acts, chunk_mask in prefetched(chunks, 2):
        take = len(chunk_acts)
        acts = chunk_acts.reshape(take * L, -1)  # (n*L, d)
        keep = ~chunk_mask.reshape(-1)  # (n*L,)
        x = np.ascontiguousarray(acts[keep], dtype=np.float32)  # (m, d)
        codes, recon = encode_chunk(sae, x)
        acc.update(x, recon, codes)
        sum_sq += float(np.einsum("nd,nd->", x, x, dtype=np.float64))
        sum_x += x.sum(axis=0, dtype=np.float64)
        n_tok += len(x)
        nnz += codes.nnz
        # place the unmasked rows back on the full grid of flat positions (masked rows stay empty)
        rows = np.flatnonzero(keep)
        counts = np.zeros(take * L, dtype=np.int64)
        counts[rows] = np.diff(codes.indptr)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        blocks.append((a, sp.csr_matrix((codes.data, codes.indices, indptr), shape=(take * L, n_latents))))
        bar.update(take * L)
    bar.close()
    sums = {name: getattr(acc, name) for name in ACC_SUMS}
    return PassPart(blocks, sums, sum_sq, sum_x, n_tok, nnz)


def add_sums(acc: FunctionAccumulator, parts: list[PassPart]) -> FunctionAccumulator:
    """`acc` (fresh) holding the parts' sums added in order."""
    for name in ACC_SUMS:
        total = parts[0].sums[name]
        for part in parts[1:]:
            total = total + part.sums[name]
        setattr(acc, name, total)
    return acc


def stream(
    cache: ActivationCache,
    hook: str,
    sae,  # noqa: ANN001 - sae_lens.SAE
    *,
    max_tokens: int | None,
    n_null: int,
    null_seed: int,
    progress: bool = True,
    world: World | None = None,
    device: torch.device | None = None,
) -> PassResult:
    """One in-order pass over the first `seqs_for(cache, max_tokens)` sequences of `hook`; under a distributed
    `world`, each rank encodes its chunks and every rank returns the same gathered result (module docstring).
    `device`: where the encoding runs (default: where `sae` is); `sae` itself is left where it is."""
    world = World() if world is None else world
    n_seq = seqs_for(cache, max_tokens)
    w_dec = sae.W_dec.detach().float().cpu().numpy()  # (F, d)
    if device is not None and device != sae.W_dec.device:
        sae = copy.deepcopy(sae).to(device)  # the caller's SAE stays on its device for the criteria
    acc = FunctionAccumulator(w_dec, n_null, null_seed)
    ranges = chunk_ranges(cache, n_seq)[world.rank :: world.world_size]
    if world.distributed:
        with collected(world):  # a rank that cannot read its chunks stops every rank
            mine = stream_part(cache, hook, sae, ranges, acc, progress=progress and world.is_main)
        parts = world.all_gather(mine)
        del mine
        acc = add_sums(FunctionAccumulator(w_dec, n_null, null_seed), parts)
    else:
        parts = [stream_part(cache, hook, sae, ranges, acc, progress=progress)]
    return combine_parts(cache, n_seq, parts, acc)


def combine_parts(
    cache: ActivationCache, n_seq: int, parts: list[PassPart], acc: FunctionAccumulator
) -> PassResult:
    """The pass's result from the parts of its chunks (any order; `acc` holds their sums, see `add_sums`)."""
    n_latents = acc.W_dec.shape[0]
    blocks = sorted((blk for part in parts for blk in part.blocks), key=lambda blk: blk[0])
    n_tok = sum(p.n_tokens for p in parts)
    nnz = sum(p.nnz for p in parts)
    sum_sq, sum_x = parts[0].sum_sq, parts[0].sum_x
    for part in parts[1:]:
        sum_sq, sum_x = sum_sq + part.sum_sq, sum_x + part.sum_x
    csr = (
        sp.vstack([blk for _, blk in blocks], format="csr")
        if blocks
        else sp.csr_matrix((0, n_latents), dtype=np.float32)
    )
    del blocks
    acts_csc = csr.tocsc()
    acts_csc.sort_indices()
    del csr
    log.debug("streamed %d sequences, %d tokens, %d nonzeros", n_seq, n_tok, nnz)
    return PassResult(
        acts_csc=acts_csc,
        tokens=cache.tokens[:n_seq],
        doc_ids=cache.doc_ids[:n_seq],
        mask=cache.mask[:n_seq],
        function=acc,
        n_tokens=n_tok,
        sum_sq=sum_sq,
        sum_x=sum_x,
        l0=nnz / max(n_tok, 1),
    )
