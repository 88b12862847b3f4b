"""Bad input to `xenofeat cache`: one clear line naming the file or option, exit status 2, nothing overwritten."""

from __future__ import annotations

import shutil

import h5py
import numpy as np

from activations import format as fmt
from tests.helpers.common import error_line, run_cli

SMALL = ["--context-size", "32", "--max-tokens", "300"]


def test_missing_corpus(tmp_path):
    line = error_line(
        run_cli("cache", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "c.h5"))
    )
    assert "--corpus" in line and "nope.txt" in line
    assert not (tmp_path / "c.h5").exists()


def test_corpus_without_tokens(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n\n  ", encoding="utf-8")
    line = error_line(
        run_cli("cache", "--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "c.h5"))
    )
    assert "--corpus" in line and "no text" in line


def test_non_utf8_files_are_skipped_and_counted(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.txt").write_text("Plain English text about hooks and caches. " * 5, encoding="utf-8")
    (d / "bad.txt").write_bytes(b"\xff\xfe caf\xe9 \x80\x81 not utf-8")
    r = run_cli("cache", "--corpus", str(d), "--out", str(tmp_path / "c.h5"), *SMALL)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 file(s) that are not valid UTF-8" in r.stderr
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(d / "bad.txt", only_bad / "bad.txt")
    line = error_line(run_cli("cache", "--corpus", str(only_bad), "--out", str(tmp_path / "d.h5")))
    assert "not UTF-8" in line


def test_unknown_model_offline(tmp_path, corpus_dir):
    line = error_line(
        run_cli(
            "cache",
            "--model",
            "no-such-org/no-such-model",
            "--corpus",
            str(corpus_dir),
            "--out",
            str(tmp_path / "c.h5"),
        )
    )
    assert "--model" in line and "no-such-org/no-such-model" in line
    assert not (tmp_path / "c.h5").exists()


def test_unknown_hook_lists_valid_ones(tmp_path, corpus_dir):
    line = error_line(
        run_cli(
            "cache",
            "--hook",
            "blocks.9.hook_nope",
            "--corpus",
            str(corpus_dir),
            "--out",
            str(tmp_path / "c.h5"),
        )
    )
    assert "blocks.9.hook_nope" in line and "blocks.{0..5}.hook_resid_post" in line


def test_existing_output_is_not_overwritten(tmp_path, corpus_dir):
    out = tmp_path / "c.h5"
    out.write_bytes(b"precious")
    line = error_line(run_cli("cache", "--corpus", str(corpus_dir), "--out", str(out)))
    assert "--overwrite" in line
    assert out.read_bytes() == b"precious"


def test_bit_flip_is_detected_by_validate_and_readers(tmp_path, small_cache):
    from activations.cache import ActivationCache

    bad = tmp_path / "flipped.h5"
    shutil.copy(small_cache, bad)
    with h5py.File(bad, "r") as f:
        ds = f["acts/blocks.3.hook_resid_post"]
        offset = ds.id.get_chunk_info(0).byte_offset  # first chunk's raw bytes
    raw = bytearray(bad.read_bytes())
    raw[offset + 1000] ^= 0x40
    bad.write_bytes(bytes(raw))
    r = run_cli("cache", "validate", str(bad))
    assert r.returncode == 2 and "checksum" in r.stderr
    cache = ActivationCache.open(bad)
    import pytest

    from activations.errors import UserError

    with pytest.raises(UserError, match="corrupt"):
        cache.read_acts("blocks.3.hook_resid_post", 0, cache.n_seq)
    assert run_cli("cache", "validate", str(small_cache)).returncode == 0


def test_truncated_file_is_detected(tmp_path, small_cache):
    bad = tmp_path / "truncated.h5"
    raw = small_cache.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    r = run_cli("cache", "validate", str(bad))
    assert r.returncode == 2 and "not a readable HDF5 file" in r.stderr
    line = error_line(run_cli("cache", "info", str(bad)))
    assert str(bad) in line


def test_incomplete_cache_refused_unless_allowed(tmp_path, small_cache):
    import pytest

    from activations.cache import ActivationCache
    from activations.errors import UserError

    part = tmp_path / "part.h5"
    shutil.copy(small_cache, part)
    with h5py.File(part, "r+") as f:
        f.attrs[fmt.A_COMPLETE] = False
    with pytest.raises(UserError, match="incomplete"):
        ActivationCache.open(part)
    assert ActivationCache.open(part, allow_partial=True).n_seq > 0
    assert run_cli("cache", "validate", "--allow-partial", str(part)).returncode == 0


def test_newer_format_version_refused(tmp_path, small_cache):
    newer = tmp_path / "newer.h5"
    shutil.copy(small_cache, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs[fmt.A_FORMAT_VERSION] = "9.0"
    line = error_line(run_cli("cache", "info", str(newer)))
    assert "9.0" in line and "upgrade" in line


def test_import_rejects_nan_and_bad_shapes(tmp_path):
    tokens = np.arange(2 * 8, dtype=np.int32).reshape(2, 8)
    acts = np.ones((2, 8, 4), np.float32)
    acts[1, 3, 2] = np.nan
    np.save(tmp_path / "t.npy", tokens)
    np.save(tmp_path / "a.npy", acts)
    args = [
        "cache",
        "import",
        "--tokens",
        str(tmp_path / "t.npy"),
        "--acts",
        str(tmp_path / "a.npy"),
        "--hook",
        "blocks.0.hook_resid_post",
        "--out",
        str(tmp_path / "c.h5"),
    ]
    line = error_line(run_cli(*args))
    assert "--acts" in line and "non-finite" in line and "(1, 3, 2)" in line
    assert not (tmp_path / "c.h5").exists()
    np.save(tmp_path / "a.npy", np.ones((2, 7, 4), np.float32))
    assert "--acts" in error_line(run_cli(*args))


def test_a_gpu_that_is_not_there_is_one_line_and_writes_nothing(tmp_path, corpus_dir):
    import torch

    out = tmp_path / "c.h5"
    device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on any machine
    r = run_cli("cache", "--corpus", str(corpus_dir), "--device", device, "--out", str(out))
    line = error_line(r)
    assert line.startswith("xenofeat: error: --device:") and device in line, line
    assert not out.exists()
