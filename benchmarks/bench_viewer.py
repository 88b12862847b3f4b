"""Viewer speed on a 16,384-latent store: first load of the overview, and showing a feature page after selection.

Builds a random store with the store's one writer (tests/helpers/demo_store.py), then drives the real app with AppTest:
- first load: a fresh AppTest run with empty caches (opens the store, draws the overview);
- page switch: selecting latents one after another on the feature page (each rerun reads that latent's slices);
- baseline, in the same script: an AppTest run of a trivial one-line app, the fixed cost of a rerun.

    python benchmarks/bench_viewer.py [--latents 16384] [--switches 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
torch.set_num_threads(1)


def main() -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.helpers.demo_store import build_random_store

    ap = argparse.ArgumentParser()
    ap.add_argument("--latents", type=int, default=16384)
    ap.add_argument("--switches", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        t0 = time.perf_counter()
        build_random_store(run, args.latents, n_seq=2000, seq_len=64, vocab_size=5000, n_top=20, per_decile=3)
        print(f"store: {args.latents} latents written in {time.perf_counter() - t0:.1f} s")
        size = sum(p.stat().st_size for p in (run / "features").iterdir()) / 2**20
        print(f"store size: {size:.1f} MiB")

        trivial = run / "trivial.py"
        trivial.write_text("import streamlit as st\nst.header('x')\n")
        base = []
        for _ in range(3):
            at = AppTest.from_file(str(trivial), default_timeout=120).run()
            t = time.perf_counter()
            at.run()
            base.append(time.perf_counter() - t)
        print(f"baseline (trivial app rerun): {statistics.median(base) * 1000:.0f} ms")

        os.environ["XENOFEAT_RUN"] = str(run)
        st.cache_resource.clear()
        at = AppTest.from_file(str(REPO / "viewer" / "app.py"), default_timeout=120)
        t = time.perf_counter()
        at.run()
        first = time.perf_counter() - t
        assert not at.exception, at.exception
        print(f"overview, first load (cold caches): {first:.2f} s")
        t = time.perf_counter()
        at.run()
        print(f"overview, rerun: {time.perf_counter() - t:.2f} s")

        at.sidebar.radio(key="page").set_value("Features").run()
        t = time.perf_counter()
        at.selectbox(key="tb_flag").set_value("flagged").run()
        print(f"table, filter flagged + page: {time.perf_counter() - t:.2f} s")

        at.sidebar.radio(key="page").set_value("Feature").run()
        times = []
        for i in range(args.switches):
            latent = (i * 1637 + 11) % args.latents  # spread over the file: no chunk reuse between switches
            t = time.perf_counter()
            at.text_input(key="fp_goto").input(str(latent)).run()
            times.append(time.perf_counter() - t)
            assert not at.exception, at.exception
            assert at.header[0].value.startswith(f"Latent {latent} ")
        med, worst = statistics.median(times), max(times)
        print(
            f"feature page after selection: median {med:.3f} s, max {worst:.3f} s over {len(times)} latents"
        )
        print(f"ratio to baseline rerun: {med / statistics.median(base):.1f}x")


if __name__ == "__main__":
    main()
