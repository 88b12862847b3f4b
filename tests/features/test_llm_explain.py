"""`xenofeat explain` against a real HTTP server on 127.0.0.1 (tests.helpers.chat_server): the real client, its
retries, timeout, malformed replies, a server that dies mid-run and the resume from RUN/features/llm.jsonl, the
store republished with the llm columns, and the bad inputs (one line, exit 2, nothing lost)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from activations.errors import UserError
from features.definition import Definition, definition_to_toml
from features.explain import ExplainJob, explain
from features.flags import apply_flags
from features.labelability import llm
from features.labelability.metrics import auroc
from features.selection import Selection
from features.store import FeatureStore
from tests.helpers.chat_server import ChatServer
from tests.helpers.common import error_line, run_cli
from tests.helpers.demo_store import build_random_store

PICK = "1,3"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A small random store (8 latents) in its own run folder."""
    build_random_store(tmp_path / "run", n_latents=8)
    return tmp_path / "run"


def _snapshot(run: Path) -> dict[str, str]:
    """SHA-256 of every file under RUN/features (to show nothing changed)."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((run / "features").rglob("*"))
        if p.is_file()
    }


def _cli(run: Path, url: str, *extra: str, env: dict | None = None):
    return run_cli("explain", str(run), "--features", PICK, "--endpoint", url, "--model", "fake-llm", "--quiet",
                   *extra, env=env)  # fmt: skip


def _keys(bodies: list[dict]) -> set[str]:
    return {json.dumps(b["messages"], sort_keys=True) for b in bodies}


def test_explain_scores_on_the_held_out_windows_and_publishes(run: Path) -> None:
    with ChatServer() as srv:
        res = _cli(run, srv.url)
        assert res.returncode == 0, res.stderr[-2000:]
        n_first = len(srv.requests)
        again = _cli(run, srv.url)
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(srv.requests) == n_first  # the rerun is answered from llm.jsonl
    assert "82 requests to send (0 answered before" in res.stdout
    assert "0 requests to send (82 answered before" in again.stdout
    store = FeatureStore.open(run)
    cfg = llm.LLMConfig()
    for j in (1, 3):
        row = store.table.iloc[j]
        assert row["llm_model"] == "fake-llm" and row["llm_prompt_version"] == llm.PROMPT_VERSION
        assert row["llm_score_kind"] == "auroc" and row["llm_n_windows"] == cfg.max_windows
        # independent expectation: the server's probabilities on the judged held-out windows, scored here
        test = store.test_windows(j)
        pick = llm.detection_sample(test.label, cfg.max_windows, j)
        words = set(row["llm_explanation"].replace("the tokens ", "").replace("'", "").split(", "))
        cur = [store.vocab[t] for t in test.tokens[pick, -1]]
        p = np.array([0.9 if w in words else 0.2 for w in cur])
        assert row["auroc_llm"] == pytest.approx(auroc(p, test.label[pick])[0])
    assert store.table.loc[[0, 2], "llm_model"].tolist() == ["", ""]  # not selected: not explained
    assert not store.table["llm_named"].any()  # [llm] mode off: no tag
    assert store.summary["llm"]["explained"] == 2


def test_without_logprobs_the_score_is_balanced_accuracy(run: Path) -> None:
    with ChatServer(logprobs=False) as srv:
        res = _cli(run, srv.url, "--features", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    row = FeatureStore.open(run).table.iloc[2]
    assert row["llm_score_kind"] == "balanced_accuracy"
    test = FeatureStore.open(run).test_windows(2)
    pick = llm.detection_sample(test.label, 40, 2)
    words = set(row["llm_explanation"].replace("the tokens ", "").replace("'", "").split(", "))
    yes = np.array([FeatureStore.open(run).vocab[t] in words for t in test.tokens[pick, -1]])
    lab = test.label[pick]
    balanced = (yes[lab].mean() + (~yes[~lab]).mean()) / 2
    assert row["auroc_llm"] == pytest.approx(balanced)


def test_retries_on_429_500_and_a_malformed_reply(run: Path) -> None:
    with ChatServer(fail=(429, 500, "malformed")) as srv:
        res = _cli(run, srv.url, "--concurrency", "1")
        assert res.returncode == 0, res.stderr[-2000:]
        assert len(srv.requests) == len(srv.answered) + 3
        assert len(_keys(srv.answered)) == len(srv.answered)  # each question answered once
    assert FeatureStore.open(run).table.iloc[1]["llm_model"] == "fake-llm"


def test_a_request_past_the_timeout_is_retried(run: Path) -> None:
    with ChatServer(stall_first_s=3.0) as srv:
        res = _cli(run, srv.url, "--features", "2", "--timeout", "0.5", "--concurrency", "1")
        assert res.returncode == 0, res.stderr[-2000:]
        assert len(srv.requests) == len(srv.answered) + 1
        assert srv.requests[0]["messages"] == srv.requests[1]["messages"]


def test_a_server_that_keeps_sending_garbage_stops_the_run_in_one_line(run: Path) -> None:
    before = _snapshot(run)
    with ChatServer(fail=("malformed",) * 10) as srv:
        job = ExplainJob(run, Selection.from_features([1]), srv.url, "fake-llm", retries=2, backoff=0.01,
                         progress=False)  # fmt: skip
        with pytest.raises(UserError, match="gave up after 3 tries.*malformed reply"):
            explain(job)
    assert _snapshot(run) == before


def test_a_server_dying_mid_run_is_resumed_without_repeating_a_request(run: Path) -> None:
    before = _snapshot(run)
    with ChatServer(die_after=30) as first:
        res = _cli(run, first.url, "--concurrency", "1")
    assert "cannot reach the server" in error_line(res) or "gave up" in error_line(res)
    assert len(first.answered) == 30
    cache = (run / "features" / "llm.jsonl").read_text().splitlines()
    assert len(cache) == 30
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if not k.endswith("llm.jsonl")} == before  # the store untouched
    with ChatServer() as second:
        res = _cli(run, second.url)
        assert res.returncode == 0, res.stderr[-2000:]
    # 82 requests in all; the 30 answered ones are not sent again (a window text that occurs twice shares its
    # cached answer, so "answered before" may count a few more than the 30 lines of the cache)
    m = re.search(r"(\d+) requests to send \((\d+) answered before", res.stdout)
    assert m, res.stdout
    to_send, answered = int(m.group(1)), int(m.group(2))
    assert to_send + answered == 82 and answered >= 30
    assert len(second.requests) == to_send
    assert not _keys(first.answered) & _keys(second.requests)  # nothing asked twice


def test_the_key_comes_from_the_named_variable(run: Path) -> None:
    with ChatServer() as srv:
        res = _cli(
            run, srv.url, "--features", "2", "--api-key-env", "XF_TEST_KEY", env={"XF_TEST_KEY": "s3cret"}
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert {h.get("Authorization") for h in srv.headers} == {"Bearer s3cret"}
    assert "s3cret" not in (run / "features" / "llm.jsonl").read_text()


def test_mode_lbl_makes_the_llm_a_describer_of_the_flag(run: Path) -> None:
    defn = Definition(llm=llm.LLMConfig(mode="lbl"))
    (run / "features" / "definition.toml").write_text(definition_to_toml(defn), encoding="utf-8")
    with ChatServer() as srv:
        res = _cli(run, srv.url, "--features", "0,1,2,3,4,5,6,7")
    assert res.returncode == 0, res.stderr[-2000:]
    t = FeatureStore.open(run).table
    lbl2 = np.clip(2 * t["auroc_llm"].to_numpy() - 1, 0, 1)
    assert (t["labelability"].to_numpy() >= lbl2 - 1e-12).all()
    assert (t["flag"] == apply_flags(t, defn.flag)["flag"]).all()
    assert FeatureStore.open(run).summary["flagged"] == int(t["flag"].sum())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unreachable", "model", "key", "max_requests", "no_store"])
def test_bad_input(run: Path, tmp_path: Path, case: str) -> None:
    before = _snapshot(run)
    with ChatServer() as srv:
        if case == "unreachable":
            res = _cli(run, f"http://127.0.0.1:{_closed_port()}/v1")
            expect = "cannot reach the server"
        elif case == "model":
            res = run_cli("explain", str(run), "--features", PICK, "--endpoint", srv.url, "--model", "nope")
            expect = "The model `nope` does not exist."
        elif case == "key":
            res = _cli(run, srv.url, "--api-key-env", "XF_TEST_KEY_UNSET", env={"XF_TEST_KEY_UNSET": ""})
            expect = "--api-key-env: the environment variable XF_TEST_KEY_UNSET is not set"
        elif case == "max_requests":
            res = _cli(run, srv.url, "--max-requests", "50")
            expect = (
                "--max-requests 50: the selection needs 82 requests for 2 latents; 50 cover only the first 1"
            )
        else:
            empty = tmp_path / "empty"
            empty.mkdir()
            res = _cli(empty, srv.url)
            expect = "no feature store"
        assert srv.answered == []
    assert expect in error_line(res)
    assert _snapshot(run) == before
