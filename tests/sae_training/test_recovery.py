"""Planted ground truth: a TopK ensemble trained by `xenofeat train` on a `xenofeat cache synth` cache, at the planted
L0, recovers the planted directions in every seed (Hungarian MCC of decoder rows against planted directions)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from activations.synth_write import generate_synthetic
from sae_training.config import TrainConfig
from sae_training.recovery import recovery
from sae_training.run import load_member, load_run
from sae_training.trainer import train
from tests.helpers.scored_run import SYNTH

torch.set_num_threads(1)


def test_topk_ensemble_at_planted_l0_recovers_planted_directions(tmp_path):
    # the scored run's cache without the four kinds of issue 11 (byte-identical to the cache before them): 46 planted
    # directions in 32 dimensions, which a 64-wide SAE recovers; the scored run grows its SAEs for the other four
    first = dataclasses.replace(SYNTH, n_position=0, n_document=0, n_anchored=0, n_rule=0)
    truth = generate_synthetic(tmp_path / "synth.h5", first)
    k = round(truth.planted_l0)
    assert k == 2
    cfg = TrainConfig(
        seeds=(0, 1, 2),
        width=64,
        k=k,
        tokens=2_400_000,
        batch_size=1024,
        lr=3e-3,
        downstream_seqs=0,
        checkpoint_every=0,
    )
    run = train(cfg, tmp_path / "synth.h5", tmp_path / "run", progress=False)
    assert sorted(load_run(run).members) == [0, 1, 2]
    decoders = {s: load_member(run, s).W_dec.detach().numpy() for s in (0, 1, 2)}
    for seed, dec in decoders.items():
        rec = recovery(dec, truth.directions)
        assert rec.mcc >= 0.9, (seed, rec.mcc)
        assert rec.matched_fraction >= 0.85, (seed, rec.matched_fraction)
    # each member has its own initialisation and data order: different SAEs, not copies
    assert not np.allclose(decoders[0], decoders[1])
