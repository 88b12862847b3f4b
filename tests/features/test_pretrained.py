"""`xenofeat score --sae sae-lens:RELEASE/SAE_ID`: a pretrained SAE through sae-lens's own `SAE.from_pretrained`.

Offline throughout: an SAE trained here is placed into a temporary local Hugging Face cache laid out as
huggingface_hub lays out a download (`models--ORG--REPO/blobs/<sha256>`, `snapshots/<rev>/<folder>/<file>` links to
the blobs, `refs/main`), under the repository and folder that sae-lens's own registry entry of the release
`gpt2-small-res-jb` names. The CLI runs as a subprocess with HF_HOME / HF_HUB_CACHE pointing there, so the registry
lookup, hf_hub_download and sae-lens's loader all run their real code; nothing is patched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from activations.synth import SynthConfig
from activations.synth_write import generate_synthetic
from features.score import ScoreJob, score
from features.store import FeatureStore
from sae_training.config import TrainConfig
from tests.helpers.common import error_line, run_cli
from tests.helpers.training import planted_cache

RELEASE = "gpt2-small-res-jb"
"""A release of sae-lens's registry whose entry uses sae-lens's own file format (no conversion function)."""

SYNTH = SynthConfig(d_model=32, n_seq=120, context_size=32, vocab_size=200, n_token=8, n_hash=4, n_hidden=4,
                    n_circle=0, freq_max=0.15, freq_min=0.03, seed=3)  # fmt: skip
TRAIN = TrainConfig(seeds=(0,), width=48, k=3, tokens=40_000, batch_size=512, lr=3e-3, downstream_seqs=0,
                    checkpoint_every=0)  # fmt: skip
REV = "0123456789abcdef0123456789abcdef01234567"


def registry_entry(sae_id: str | None = None) -> tuple[str, str, str]:
    """(sae id, repo id, folder) of the release in sae-lens's installed registry (its first id by default)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory()[RELEASE]
    sae_id = sae_id or next(iter(entry.saes_map))
    return sae_id, entry.repo_id, entry.saes_map[sae_id]


def place_in_hf_cache(hub: Path, repo_id: str, folder: str, sae_dir: Path) -> None:
    """Put the files of a sae-lens SAE folder where huggingface_hub keeps a download of REPO/FOLDER/*."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    for name in ("cfg.json", "sae_weights.safetensors"):
        data = (sae_dir / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / REV / folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


class World:
    """The synthetic cache, the SAE trained on it, and the local HF cache holding it as a release's SAE."""

    def __init__(self, root: Path) -> None:
        from sae_training.trainer import train

        self.cache = root / "synth.h5"
        generate_synthetic(self.cache, SYNTH)
        self.sae_dir = train(TRAIN, self.cache, root / "run", progress=False) / "seed-0"
        self.sae_id, self.repo_id, folder = registry_entry()
        self.hf_home = root / "hf"
        place_in_hf_cache(self.hf_home / "hub", self.repo_id, folder, self.sae_dir)
        self.spec = f"sae-lens:{RELEASE}/{self.sae_id}"
        self.root = root

    def env(self, hf_home: Path | None = None) -> dict[str, str]:
        home = hf_home or self.hf_home
        return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "XENOFEAT_ONLINE": "0"}

    def score(self, out: Path, *args: str, hf_home: Path | None = None):  # noqa: ANN201
        # a generous timeout: the suite may share its cores with other work
        return run_cli("score", str(out), *args, "--cache", str(self.cache), "--workers", "1", "--quiet",
                       env=self.env(hf_home), timeout=1800)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("pretrained"))


def test_pretrained_release_scores_offline_with_c2_not_applicable(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = world.score(out, "--sae", world.spec)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stability (C2)      not applicable (--stability none)" in result.stdout
    store = FeatureStore.open(out)
    s = store.summary
    assert s["sae"]["path"] == world.spec
    assert s["stability"] == {
        "applicable": False,
        "why_not": "no other seeds to match against (does not gate well_defined)",
        "n_others": 0,
        "mode": "none",
        "companions": None,
    }
    assert s["seeds"] == [0] and s["others"] == [] and "pw_mcc" not in s
    t = store.table
    assert t["stability_pass"].all() and t["stability"].isna().all()
    # the pretrained SAE is the SAE placed in the cache: scoring its folder directly gives the same table
    ref = score(ScoreJob(run=tmp_path / "folder", sae=world.sae_dir, cache=world.cache, stability="none",
                         workers=1, progress=False))  # fmt: skip
    for col in ("firing_count", "support_pass", "function_pass", "well_defined", "flag"):
        np.testing.assert_array_equal(t[col].to_numpy(), ref.table[col].to_numpy(), err_msg=col)
    assert s["sae"]["explained_variance"] == pytest.approx(ref.summary["sae"]["explained_variance"], rel=1e-5)


def test_pretrained_with_seed_companions(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("--sae", world.spec, "--stability", "companions", "--companion-tokens", "20000")
    result = world.score(out, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    comp = out / "companions"
    assert f"matched against companions {comp}" in result.stdout
    run = json.loads((comp / "run.json").read_text())
    assert run["status"] == "complete" and run["seeds"] == [1, 2]
    assert run["config"]["arch"] == "topk" and run["config"]["width"] == 48 and run["config"]["k"] == 3
    s = FeatureStore.open(out).summary
    assert s["stability"]["mode"] == "companions" and s["stability"]["applicable"] is True
    assert s["stability"]["companions"] == str(comp) and s["seeds"] == [0, 1, 2]
    assert s["others"] == [str(comp / "seed-1"), str(comp / "seed-2")]
    assert 0.0 < s["pw_mcc"] <= 1.0
    t = FeatureStore.open(out).table
    assert t["stability"].between(0, 1).all()
    # a rerun reuses the finished companions instead of training them again
    blob = (comp / "seed-1" / "sae_weights.safetensors").read_bytes()
    again = world.score(out, *args, "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training" not in again.stderr
    assert (comp / "seed-1" / "sae_weights.safetensors").read_bytes() == blob


def test_offline_release_missing_from_cache_fails_at_once(world: World, tmp_path: Path) -> None:
    empty = tmp_path / "empty-hf"
    empty.mkdir()
    line = error_line(world.score(tmp_path / "out", "--sae", world.spec, hf_home=empty))
    assert (
        f"release {RELEASE}" in line
        and world.repo_id in line
        and "not in the local Hugging Face cache" in line
    )
    assert "XENOFEAT_ONLINE=1" in line
    assert not (tmp_path / "out").exists()


def test_unknown_release_and_sae_id(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = error_line(world.score(out, "--sae", "sae-lens:gpt2-small-res-jbb/blocks.0.hook_resid_pre"))
    assert "--sae" in line and "unknown sae-lens release 'gpt2-small-res-jbb'" in line and RELEASE in line
    line = error_line(world.score(out, "--sae", f"sae-lens:{RELEASE}/blocks.99.hook_resid_pre"))
    assert f"release {RELEASE} has no SAE id 'blocks.99.hook_resid_pre'" in line
    line = error_line(world.score(out, "--sae", f"sae-lens:{RELEASE}"))
    assert "sae-lens:RELEASE/SAE_ID" in line
    line = error_line(world.score(out, "--sae", world.spec, "--others", "sae-lens:nope/x"))
    assert "--others" in line and "'nope'" in line
    assert not out.exists()


def test_pretrained_that_does_not_fit_the_cache(world: World, tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.h5"
    generate_synthetic(narrow, SynthConfig(d_model=16, n_seq=20, n_token=4, n_hash=0, n_hidden=0, n_circle=0))
    other_hook = tmp_path / "planted.h5"
    planted_cache(other_hook, n_seq=8, d=32)
    for cache, want in ((narrow, ("d_model=16", "d_in=32")),
                        (other_hook, ("blocks.0.hook_resid_post", "hook synthetic.hook_x"))):  # fmt: skip
        out = tmp_path / f"out-{cache.stem}"
        result = run_cli("score", str(out), "--sae", world.spec, "--cache", str(cache), env=world.env())
        line = error_line(result)
        assert world.spec in line and str(cache) in line and all(w in line for w in want), line
        assert not out.exists()


def test_stability_option_bad_combinations(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = error_line(world.score(out, "--sae", world.spec, "--stability", "seeds"))
    assert "--others" in line and "1 more" in line and "--stability none" in line
    line = error_line(
        world.score(out, "--sae", world.spec, "--others", str(world.sae_dir), "--stability", "none")
    )
    assert "--others: only with --stability seeds" in line
    line = error_line(
        world.score(out, "--sae", world.spec, "--stability", "companions", "--companion-tokens", "0")
    )
    assert "--companion-tokens" in line
    assert not out.exists()
