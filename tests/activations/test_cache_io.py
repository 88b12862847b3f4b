"""Reading caches: the import round trip, the scanner, and old-format fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from activations.cache import ActivationCache
from activations.importer import import_cache
from tests.helpers.common import FIXTURES, run_cli

FIXTURES = FIXTURES


def make_import(
    tmp_path: Path, n_seq: int = 40, L: int = 16, d: int = 8
) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(n_seq, L)).astype(np.int32)
    acts = rng.standard_normal((n_seq, L, d)).astype(np.float32)
    # make every token's activation identify it: row index in the first component
    acts[..., 0] = np.arange(n_seq * L).reshape(n_seq, L)
    mask = np.zeros((n_seq, L), bool)
    mask[:, 0] = True
    np.save(tmp_path / "t.npy", tokens)
    np.save(tmp_path / "a.npy", acts)
    np.save(tmp_path / "m.npy", mask)
    (tmp_path / "v.json").write_text(json.dumps([f"w{i}" for i in range(50)]))
    out = import_cache(
        tokens=tmp_path / "t.npy",
        acts=tmp_path / "a.npy",
        hook="blocks.0.hook_resid_post",
        out=tmp_path / "c.h5",
        mask=tmp_path / "m.npy",
        vocab=tmp_path / "v.json",
        dtype="float32",
    )
    return out, tokens, acts


def test_import_round_trip_cli(tmp_path):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 10, size=(3, 5)).astype(np.int64)
    acts = rng.standard_normal((3, 5, 4)).astype(np.float32)
    from safetensors.numpy import save_file

    save_file({"blocks.2.hook_resid_post": acts}, str(tmp_path / "a.safetensors"))
    np.save(tmp_path / "t.npy", tokens)
    np.save(tmp_path / "d.npy", np.array([0, 0, 1]))
    r = run_cli(
        "cache",
        "import",
        "--tokens",
        str(tmp_path / "t.npy"),
        "--acts",
        str(tmp_path / "a.safetensors"),
        "--hook",
        "blocks.2.hook_resid_post",
        "--doc-ids",
        str(tmp_path / "d.npy"),
        "--out",
        str(tmp_path / "c.h5"),
        "--dtype",
        "float32",
    )
    assert r.returncode == 0, r.stderr
    assert "cache written" in r.stdout
    cache = ActivationCache.open(tmp_path / "c.h5")
    np.testing.assert_array_equal(cache.tokens, tokens)
    np.testing.assert_array_equal(cache.read_acts("blocks.2.hook_resid_post", 0, 3), acts)
    assert cache.doc_ids[2, 0] == 1 and cache.doc_ids[1, 4] == 0
    assert run_cli("cache", "validate", str(tmp_path / "c.h5")).returncode == 0


def test_scan_reads_everything_in_order(tmp_path):
    out, tokens, acts = make_import(tmp_path)
    cache = ActivationCache.open(out)
    chunks = list(cache.scan(chunk_seqs=7))
    assert [c.seq_start for c in chunks] == list(range(0, 40, 7))
    np.testing.assert_array_equal(np.concatenate([c.acts for c in chunks]), acts)
    np.testing.assert_array_equal(np.concatenate([c.tokens for c in chunks]), tokens)
    assert cache.vocab[7] == "w7"


def test_format_v1_0_fixture_reads_back():
    """A file written by format 1.0 is kept in the repository and must stay readable."""
    cache = ActivationCache.open(FIXTURES / "cache-v1.0.h5")
    assert cache.meta.format_version == "1.0"
    expected = json.loads((FIXTURES / "cache-v1.0.json").read_text())
    assert list(cache.hooks) == expected["hooks"]
    np.testing.assert_array_equal(cache.tokens, np.array(expected["tokens"]))
    acts = cache.read_acts(cache.hooks[0], 0, cache.n_seq)
    np.testing.assert_allclose(acts.sum(axis=(1, 2)), expected["act_sums"], rtol=1e-5)
    assert cache.vocab[: len(expected["vocab_head"])] == expected["vocab_head"]
    ctx = cache.context(1, 3, width=2)
    assert ctx.tokens == expected["context_1_3"]
