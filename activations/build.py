"""Building a cache from a model and a corpus: `xenofeat cache`.

The corpus is packed into sequences up front (cheap, deterministic), then the model runs batch by batch and every
batch is appended to the file. A resumed run re-packs the same sequences, checks that every setting matches the
file's, and starts after the last batch the file vouches for, so it ends with exactly the bytes an uninterrupted run
writes (the batch size is one of the settings, because batch composition can change float results).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from activations import format as fmt
from activations.corpus import load_corpus
from activations.errors import UserError
from activations.model import BACKENDS, LoadedModel, capture, check_hooks, load_model
from activations.overwrite import check_location, check_replace_cache
from activations.sequences import PackedCorpus, pack_corpus
from activations.shards import Manifest, check_replace_shards, read_manifest, remove_shards
from activations.writer import CacheWriter

log = logging.getLogger(__name__)

DEFAULT_HOOK = "blocks.3.hook_resid_post"


@dataclass(frozen=True)
class CacheJob:
    """What to cache: every field that determines the file's content."""

    out: Path
    """The HDF5 file to write."""
    model: str = "default"
    """`default` (all-MiniLM-L6-v2, embedded), a local model directory, or a Hugging Face model name."""
    corpus: str = "default"
    """`default` (embedded CPython prose), a file, folder, glob, .jsonl file, or hf:NAME[:SPLIT]."""
    hooks: tuple[str, ...] = (DEFAULT_HOOK,)
    """TransformerLens hook names to capture."""
    context_size: int = 128
    """Tokens per sequence, special tokens included."""
    max_tokens: int | None = None
    """Cap on the corpus tokens cached (None: the whole corpus)."""
    batch_size: int = 32
    """Sequences per forward pass (and per append: the unit of resumption)."""
    dtype: str = "float16"
    """Storage dtype of activations: float16 or float32."""
    text_field: str = "text"
    """JSONL / data-set field that holds the text."""
    split: str = "file"
    """For text files: one document per `file`, or per group of `paragraphs`."""
    device: str = "cpu"
    """torch device for the forward passes."""
    backend: str = "auto"
    """How activations are computed (`activations.model.BACKENDS`). Not a setting of the file: `auto` uses the fast
    path only where it equals the bridge bit for bit, so either backend writes the same bytes."""

    def __post_init__(self) -> None:
        if self.context_size < 4:
            raise UserError(f"--context-size: {self.context_size} is too small (at least 4)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"--max-tokens: {self.max_tokens} must be positive")
        if self.batch_size < 1:
            raise UserError(f"--batch-size: {self.batch_size} must be positive")
        if self.dtype not in fmt.DTYPES:
            raise UserError(f"--dtype: {self.dtype!r} is not one of {', '.join(fmt.DTYPES)}")
        if not self.hooks:
            raise UserError("--hook: name at least one hook")
        if self.backend not in BACKENDS:
            raise UserError(f"--backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")


def build_cache(
    job: CacheJob, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write (or resume) the cache described by `job`; returns its path (`progress`: draw progress bars)."""
    out = Path(job.out)
    if out.exists() and not (resume or overwrite):
        raise UserError(f"{out}: already exists; pass --overwrite to replace it or --resume to continue it")
    check_location(out)
    if overwrite and not resume and (out.exists() or out.is_symlink()):
        check_replace_cache(out)  # before the model loads: a refusal costs nothing
    if overwrite and not resume:
        check_replace_shards(out)  # the shard folder of a sharded cache at `out` goes with it
    if resume and not out.exists():
        raise UserError(f"{out}: nothing to resume (the file does not exist)")
    if resume:
        refuse_sharded(out, 1)
    model, packed, settings = prepare(job, progress)
    if resume:
        writer = CacheWriter.resume(out, settings=settings)
    else:
        if overwrite:
            remove_shards(out)  # the shards of a sharded cache this one replaces
        writer = new_writer(out, job, model, packed, settings, overwrite=overwrite)
    with writer:
        _fill(writer, model, packed, list(job.hooks), job, progress)
        writer.finish()
    return out


def refuse_sharded(out: Path, world_size: int) -> None:
    """UserError if `out` is the index of a sharded cache written by another number of processes than this job's."""
    manifest = sharded_manifest(out)
    if manifest is not None and manifest.world_size != world_size:
        how = "one process" if world_size == 1 else f"{world_size} processes"
        raise UserError(
            f"{out}: this sharded cache was written by {manifest.world_size} processes and this job has {how}; "
            f"resume it with torchrun --nproc-per-node {manifest.world_size} (or the same nodes as before)"
        )


def sharded_manifest(out: Path) -> Manifest | None:
    """The manifest of the index `out`; None for a one-file cache, or a file h5py cannot open read-only (a cache
    cut short by a full disk: `CacheWriter.resume` repairs it or names the problem)."""
    try:
        f = h5py.File(out, "r")
    except OSError:
        return None
    with f:
        return read_manifest(f, out)


def prepare(job: CacheJob, progress: bool = True) -> tuple[LoadedModel, PackedCorpus, dict[str, Any]]:
    """Load the model, check the hooks and pack the corpus; the settings that determine the cache's content."""
    model = load_model(job.model, device=job.device)
    hooks = list(job.hooks)
    check_hooks(model, hooks)
    if model.max_context and job.context_size > model.max_context:
        raise UserError(
            f"--context-size: {job.context_size} exceeds the model's context of {model.max_context}"
        )
    corpus = load_corpus(job.corpus, text_field=job.text_field, split=job.split)
    packed = pack_corpus(corpus, model.tokenizer, job.context_size, job.max_tokens, progress=progress)
    settings = {
        "model_id": model.model_id,
        "model_fingerprint": model.fingerprint(),
        "hooks": hooks,
        "context_size": job.context_size,
        "dtype": job.dtype,
        "corpus": job.corpus,
        "corpus_fingerprint": packed.fingerprint,
        "max_tokens": job.max_tokens,
        "batch_size": job.batch_size,
        "text_field": job.text_field,
        "split": job.split,
    }
    return model, packed, settings


def new_writer(
    out: Path, job: CacheJob, model: LoadedModel, packed: PackedCorpus, settings: dict[str, Any], **kw: Any
) -> CacheWriter:
    """CacheWriter.create for this job (keyword arguments: overwrite, extra_attrs)."""
    return CacheWriter.create(
        out,
        hooks=list(job.hooks),
        d_model=model.d_model,
        context_size=job.context_size,
        dtype=job.dtype,
        vocab=model.vocab(),
        model_id=model.model_id,
        model_fingerprint=settings["model_fingerprint"],
        corpus=job.corpus,
        corpus_fingerprint=packed.fingerprint,
        settings=settings,
        **kw,
    )


def encode(model: LoadedModel, packed: PackedCorpus, a: int, b: int, job: CacheJob) -> dict[str, np.ndarray]:
    """The activations of sequences [a, b) at every hook, in the storage dtype; UserError if any is not finite."""
    hooks = list(job.hooks)
    tokens = torch.from_numpy(packed.tokens[a:b].astype(np.int64)).to(job.device)
    attention = torch.from_numpy(packed.attention[a:b].astype(np.int64)).to(job.device)
    acts = capture(model, tokens, attention, hooks, backend=job.backend)
    arrays = {h: acts[h].to("cpu", torch.float32).numpy().astype(np.dtype(job.dtype)) for h in hooks}
    for h, arr in arrays.items():
        if not np.isfinite(arr[~packed.mask[a:b]]).all():
            raise UserError(f"--model: non-finite activations at {h} in sequences {a}-{b}")
    return arrays


def _fill(
    writer: CacheWriter,
    model: LoadedModel,
    packed: PackedCorpus,
    hooks: list[str],
    job: CacheJob,
    progress: bool,
) -> None:
    n_seq, L = packed.tokens.shape
    start = writer.seqs_written
    t0 = time.perf_counter()
    with tqdm(
        total=n_seq * L, initial=start * L, desc="caching", unit="tok", unit_scale=True, disable=not progress
    ) as bar:
        for a in range(start, n_seq, job.batch_size):
            b = min(a + job.batch_size, n_seq)
            arrays = encode(model, packed, a, b, job)
            writer.append(
                packed.tokens[a:b], packed.doc_ids[a:b], packed.positions[a:b], packed.mask[a:b], arrays
            )
            bar.update((b - a) * L)
    log.debug("cached %d sequences in %.1f s", n_seq - start, time.perf_counter() - t0)
