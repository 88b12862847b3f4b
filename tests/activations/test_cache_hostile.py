"""Hostile or careless cache input: `cache import` of degenerate arrays, and caches whose attributes were edited.

Each case must end in one `xenofeat: error:` line naming the file or option, exit status 2, and leave no file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations import format as fmt
from tests.helpers.common import error_line, run_cli
from tests.helpers.training import HOOK, planted_cache

# --- cache import ----------------------------------------------------------------------------------------------------


def _import(tmp_path: Path, tokens: np.ndarray, acts: np.ndarray, *extra: str, hook: str = HOOK):
    np.save(tmp_path / "t.npy", tokens)
    np.save(tmp_path / "a.npy", acts)
    out = tmp_path / "c.h5"
    r = run_cli(
        "cache", "import", "--tokens", str(tmp_path / "t.npy"), "--acts", str(tmp_path / "a.npy"),
        "--hook", hook, "--out", str(out), *extra,
    )  # fmt: skip
    return r, out


TOK = np.arange(16, dtype=np.int32).reshape(2, 8)
ACT = np.ones((2, 8, 4), np.float32)


@pytest.mark.parametrize(
    ("tokens", "acts", "option", "words"),
    [
        (TOK, np.ones((2, 8, 0), np.float32), "--acts", "width 0"),
        (np.zeros((0, 8), np.int32), np.ones((0, 8, 4), np.float32), "--tokens", "no sequences"),
        (np.zeros((2, 0), np.int32), np.ones((2, 0, 4), np.float32), "--tokens", "length 0"),
    ],
    ids=["d0", "no-sequences", "length0"],
)
def test_import_refuses_empty_arrays(tmp_path, tokens, acts, option, words):
    r, out = _import(tmp_path, tokens, acts)
    line = error_line(r)
    assert option in line and words in line
    assert not out.exists()


@pytest.mark.parametrize("hook", [".", "acts/x"])
def test_import_refuses_non_hook_names(tmp_path, hook):
    r, out = _import(tmp_path, TOK, ACT, hook=hook)
    line = error_line(r)
    assert "--hook" in line and "not a hook name" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "hook", [".", "..", "acts/x", "blocks.0/../x", "", "blocks..0", "a b", "x" * 300, "blocks.0."]
)
def test_hook_names_outside_transformerlens_style_are_refused(hook):
    from activations.cache import check_hook_name
    from activations.errors import UserError

    with pytest.raises(UserError, match="not a hook name"):
        check_hook_name(hook)


@pytest.mark.parametrize(
    "hook", ["blocks.3.hook_resid_post", "hook_embed", "blocks.0.attn.hook_z", "ln_final.hook_normalized"]
)
def test_transformerlens_hook_names_are_accepted(hook):
    from activations.cache import check_hook_name

    assert check_hook_name(hook) == hook


@pytest.mark.parametrize("big", [5_000_000, 2**40])
def test_import_refuses_token_ids_beyond_the_vocabulary(tmp_path, big):
    tokens = TOK.astype(np.int64)
    tokens[1, 2] = big
    r, out = _import(tmp_path, tokens, ACT)
    line = error_line(r)
    assert "--tokens" in line and str(big) in line and "--vocab" in line
    assert not out.exists()
    (tmp_path / "v.json").write_text('["a", "b"]', encoding="utf-8")
    line = error_line(_import(tmp_path, tokens, ACT, "--vocab", str(tmp_path / "v.json"))[0])
    assert "--vocab" in line and "2 entries" in line
    assert not out.exists()
    (tmp_path / "v.json").write_text('{"a": 0, "b": 1099511627776}', encoding="utf-8")
    line = error_line(_import(tmp_path, tokens, ACT, "--vocab", str(tmp_path / "v.json"))[0])
    assert "--vocab" in line and "outside" in line
    assert not out.exists()


def test_import_accepts_a_valid_hook_and_small_ids(tmp_path):
    """The checks above must not refuse ordinary input: the cache is written and reads back."""
    from activations.cache import ActivationCache

    r, out = _import(tmp_path, TOK, ACT, hook="blocks.0.attn.hook_z")
    assert r.returncode == 0, r.stderr
    with ActivationCache.open(out) as cache:
        assert cache.hooks == ("blocks.0.attn.hook_z",)
        assert cache.vocab[15] == "<15>"
        np.testing.assert_array_equal(cache.tokens, TOK)


def test_import_refuses_document_ids_out_of_range(tmp_path):
    np.save(tmp_path / "d.npy", np.array([0, -7], np.int64))
    r, out = _import(tmp_path, TOK, ACT, "--doc-ids", str(tmp_path / "d.npy"))
    assert "--doc-ids" in error_line(r)
    assert not out.exists()


# --- edited caches reaching the readers ------------------------------------------------------------------------------


def _set(name, value):
    def edit(f: h5py.File) -> None:
        f.attrs[name] = value

    return edit


def _tokens_out_of_vocab(f: h5py.File) -> None:
    f[fmt.TOKENS][3, 5] = 1_000_000


def _no_vocab(f: h5py.File) -> None:
    del f[fmt.VOCAB]


EDITS = {
    "d_model-0": (_set(fmt.A_D_MODEL, 0), "'d_model'"),
    "d_model-text": (_set(fmt.A_D_MODEL, "abc"), "'d_model'"),
    "hooks-not-json": (_set(fmt.A_HOOKS, "not json ["), "'hooks'"),
    "hooks-path": (_set(fmt.A_HOOKS, '["."]'), "'hooks'"),
    "settings-not-json": (_set(fmt.A_SETTINGS, "{oops"), "'settings'"),
    "settings-list": (_set(fmt.A_SETTINGS, "[1]"), "'settings'"),
    "negative-seqs": (_set(fmt.A_SEQS_WRITTEN, -5), "'seqs_written'"),
    "negative-tokens": (_set(fmt.A_TOKENS_WRITTEN, -1), "'tokens_written'"),
    "context-0": (_set(fmt.A_CONTEXT_SIZE, 0), "'context_size'"),
    "dtype": (_set(fmt.A_DTYPE, "int8"), "'dtype'"),
    "tokens-out-of-vocab": (_tokens_out_of_vocab, "1000000"),
    "no-vocab": (_no_vocab, "'vocab'"),
}


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A planted cache and a tiny two-seed run trained on it (a few seconds)."""
    from sae_training.config import TrainConfig
    from sae_training.trainer import train

    root = tmp_path_factory.mktemp("planted")
    cache = root / "planted.h5"
    planted_cache(cache, n_seq=80)
    cfg = TrainConfig(
        seeds=(0, 1), width=64, k=3, tokens=4096, batch_size=1024, downstream_seqs=0, checkpoint_every=0
    )
    run = train(cfg, cache, root / "run", progress=False)
    return cache, run


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize("name", list(EDITS))
def test_edited_cache_is_refused_by_readers_and_validate(tmp_path, planted_run, name):
    from activations.cache import ActivationCache
    from activations.errors import UserError
    from activations.inspect import validate

    edit, words = EDITS[name]
    bad = _edited(planted_run[0], tmp_path / "edited.h5", edit)
    with pytest.raises(UserError) as err:
        ActivationCache.open(bad)
    assert str(bad) in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value)
    problems = validate(bad)
    assert problems and str(bad) in problems[0] and words in problems[0]


@pytest.mark.parametrize(
    "name", ["d_model-0", "hooks-not-json", "settings-not-json", "tokens-out-of-vocab", "no-vocab"]
)
def test_edited_cache_reaching_train_is_one_line(tmp_path, planted_run, name):
    edit, words = EDITS[name]
    bad = _edited(planted_run[0], tmp_path / "edited.h5", edit)
    out = tmp_path / "run"
    line = error_line(
        run_cli("train", "--cache", str(bad), "--out", str(out), "--width", "64", "--k", "3",
                "--tokens", "2048", "--batch-size", "1024", "--seeds", "0", "--no-progress")
    )  # fmt: skip
    assert str(bad) in line and words in line
    assert not out.exists()


@pytest.mark.parametrize("name", ["hooks-not-json", "no-vocab"])
def test_edited_cache_reaching_score_is_one_line(tmp_path, planted_run, name):
    edit, words = EDITS[name]
    bad = _edited(planted_run[0], tmp_path / "edited.h5", edit)
    run = planted_run[1]
    line = error_line(run_cli("score", str(run), "--cache", str(bad), "--quiet", "--workers", "1"))
    assert str(bad) in line and words in line
    assert not (run / "features").exists()


def test_validate_and_readers_accept_the_unedited_cache(planted_run):
    from activations.cache import ActivationCache
    from activations.inspect import validate

    assert validate(planted_run[0]) == []
    with ActivationCache.open(planted_run[0]) as cache:
        assert cache.n_seq == 80 and cache.d_model == 32
