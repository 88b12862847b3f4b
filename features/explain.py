"""`xenofeat explain`: the LLM cross-check of a scored store (the `llm` describer, features.labelability.llm).

For each selected latent: one request for an explanation from its top and decile-sampled windows, then one request
per judged held-out window (a class-balanced sample of the windows LBL scored the describers on, as the label
tester scores a person's label). Before any request, the plan is printed (requests, how many the cache already
answered, prompt tokens ~ characters / 4) and checked against `--max-requests`. Requests run `concurrency` at a time
through `features.llm_client` (cached in `RUN/features/llm.jsonl` as they arrive). Finally the results go into the
store's llm columns (and, by the definition's `[llm] mode`, its tag or LBL and the flag), and the store is published
anew through `features.store.publish` (a kill at any instant leaves the old store or the new one).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from activations.errors import UserError
from features.flags import summarize
from features.labelability import llm
from features.llm_client import Endpoint, ReplyCache, api_key, cache_key, chat, check_reply, check_url
from features.selection import Selection, resolve
from features.store import FeatureStore
from features.store.publish import prepare, publish
from features.store.schema import DEFINITION_FILE, EXAMPLES_FILE, TABLE_FILE
from features.store.writer import write_summary, write_table

CHARS_PER_TOKEN = 4
GUESS_EXPLANATION_CHARS = 120  # the length of an explanation not yet written, for the estimate


@dataclass(frozen=True)
class ExplainJob:
    """What `xenofeat explain` was asked to do."""

    run: Path
    selection: Selection
    endpoint: str
    model: str
    api_key_env: str | None = None
    max_requests: int | None = None
    concurrency: int = 4
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    progress: bool = True


@dataclass(frozen=True)
class LatentPlan:
    """The prompts of one latent: its explanation request and its judged windows."""

    latent: int
    explain: list[dict[str, str]]
    texts: list[str]
    """Judged held-out windows as text, the centre token marked."""
    label: np.ndarray
    """(n,) bool: the latent fires at the centre of each judged window."""


def check_job(job: ExplainJob) -> Endpoint:
    """The endpoint of a job after checking its options (UserError naming the option)."""
    check_url(job.endpoint)
    if not job.model.strip():
        raise UserError("--model: empty; name the model the server serves")
    if job.concurrency < 1:
        raise UserError(f"--concurrency: must be at least 1, got {job.concurrency}")
    if not job.timeout > 0:
        raise UserError(f"--timeout: must be a positive number of seconds, got {job.timeout}")
    if job.max_requests is not None and job.max_requests < 0:
        raise UserError(f"--max-requests: must be at least 0, got {job.max_requests}")
    key = api_key(job.api_key_env)
    return Endpoint(job.endpoint, job.model, key, job.timeout, job.retries, job.backoff)


def plan_latent(store: FeatureStore, latent: int, cfg: llm.LLMConfig) -> LatentPlan | None:
    """The prompts for one latent, or None when it never fires (nothing to explain)."""
    ex = store.examples(latent)
    vocab = store.vocab
    shown = [(ex.top, np.arange(min(cfg.n_top, len(ex.top.tokens))))]
    if ex.deciles.decile is not None:
        dec = ex.deciles.decile
        picks = [np.flatnonzero(dec == q)[: cfg.per_decile] for q in range(9, -1, -1)]
        shown.append((ex.deciles, np.concatenate(picks) if picks else np.zeros(0, np.int64)))
    examples = [
        llm.window_text(w.tokens[i], vocab, w.acts[i] > 0) for w, rows in shown for i in rows.astype(np.int64)
    ]
    examples = [e for e in examples if llm.MARK_L in e]
    if not examples:
        return None
    test = ex.test
    pick = llm.detection_sample(test.label, cfg.max_windows, latent)
    width = min(cfg.context, test.tokens.shape[1] - 1) + 1 if test.tokens.size else 1
    texts = []
    for row in test.tokens[pick]:
        win = row[-width:]
        texts.append(llm.window_text(win, vocab, np.arange(len(win)) == len(win) - 1))
    return LatentPlan(latent, llm.explain_messages(examples), texts, test.label[pick])


def _chars(messages: Sequence[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def count_needed(plan: LatentPlan, cache: ReplyCache, model: str) -> tuple[int, int, int]:
    """(requests still to send, requests answered in the cache, prompt characters to send) for one latent."""
    key = cache_key(model, llm.PROMPT_VERSION, plan.explain)
    reply = cache.get(key)
    if reply is None:
        guess = "x" * GUESS_EXPLANATION_CHARS
        chars = _chars(plan.explain) + sum(_chars(llm.detect_messages(guess, t)) for t in plan.texts)
        return 1 + len(plan.texts), 0, chars
    expl = _explanation(reply)
    todo = [llm.detect_messages(expl, t) for t in plan.texts]
    missing = [m for m in todo if cache.get(cache_key(model, llm.PROMPT_VERSION, m)) is None]
    return len(missing), 1 + len(todo) - len(missing), sum(_chars(m) for m in missing)


def _explanation(reply: dict) -> str:
    try:
        return llm.parse_explanation(check_reply(reply))
    except ValueError:
        return ""


def check_budget(plans: Sequence[LatentPlan], needed: Sequence[int], max_requests: int | None) -> None:
    """UserError when `--max-requests` cannot pay for the selection, saying how many latents it would cover."""
    total = sum(needed)
    if max_requests is None or total <= max_requests:
        return
    covered = int(np.searchsorted(np.cumsum(needed), max_requests, side="right"))
    raise UserError(
        f"--max-requests {max_requests}: the selection needs {total} requests for {len(plans)} latents; "
        f"{max_requests} cover only the first {covered} of them (raise it, or select fewer latents)"
    )


def run_requests(
    tasks: Sequence[list[dict[str, str]]], ask: Callable[[list[dict[str, str]]], dict], concurrency: int
) -> list[dict]:
    """The replies to `tasks` in order, `concurrency` at a time; the first failure cancels the rest and is raised
    (requests already in flight finish, and their answers are cached)."""
    out: list[dict] = [{}] * len(tasks)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(ask, t): i for i, t in enumerate(tasks)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise f.exception()  # type: ignore[misc]
                out[futures[f]] = f.result()
    return out


def explain(job: ExplainJob, out: TextIO = sys.stdout) -> pd.DataFrame:
    """Run the whole cross-check; returns the published table. UserError (one line) on any bad input."""
    ep = check_job(job)
    store = FeatureStore.open(job.run)
    run = store.folder.parent
    cfg = store.definition().llm
    selected = resolve(store.table, job.selection, run)
    plans, skipped = [], []
    for j in selected.features.tolist():
        p = plan_latent(store, int(j), cfg)
        (plans if p is not None else skipped).append(p if p is not None else int(j))
    if not plans:
        raise UserError(f"{selected.selection}: none of the selected latents fires; nothing to explain")
    cache = ReplyCache(run)
    counts = [count_needed(p, cache, ep.model) for p in plans]
    needed = [c[0] for c in counts]
    out.write(
        f"explain: {len(plans)} latents ({selected.selection}), {sum(needed)} requests to send "
        f"({sum(c[1] for c in counts)} answered before, in {cache.path.name}), about "
        f"{sum(c[2] for c in counts) // CHARS_PER_TOKEN:,} prompt tokens (characters / {CHARS_PER_TOKEN}); "
        f"model {ep.model} at {ep.chat_url}\n"
        + (f"skipped (never fire): {', '.join(map(str, skipped))}\n" if skipped else "")
    )
    out.flush()
    check_budget(plans, needed, job.max_requests)
    results = _ask_all(plans, ep, cfg, cache, job, sum(needed))
    table = llm.merge_results(store.table, results, ep.model, cfg, store.definition().flag)
    _republish(store, table, ep.model, cfg)
    for r in results:
        out.write(f"latent {r.latent}: {r.kind} {r.auroc:.3f} on {r.n_windows} windows · {r.explanation}\n")
    return table


def _ask_all(
    plans: Sequence[LatentPlan],
    ep: Endpoint,
    cfg: llm.LLMConfig,
    cache: ReplyCache,
    job: ExplainJob,
    total: int,
) -> list[llm.LatentResult]:
    """Explanations first, then every judgement; each answer cached as it arrives (the bar counts requests sent)."""
    with tqdm(total=total, desc="explain", unit="req", disable=not job.progress) as bar:

        def ask(messages: list[dict[str, str]], max_tokens: int, logprobs: bool) -> dict:
            key = cache_key(ep.model, llm.PROMPT_VERSION, messages)
            reply = cache.get(key)
            if reply is None:
                reply = chat(ep, messages, max_tokens=max_tokens, logprobs=logprobs)
                cache.put(key, ep.model, llm.PROMPT_VERSION, messages, reply)
                bar.update(1)
            return reply

        replies = run_requests(
            [p.explain for p in plans], lambda m: ask(m, cfg.max_tokens, False), job.concurrency
        )
        expls = [_explanation(r) for r in replies]
        tasks = [(i, llm.detect_messages(e, t)) for i, (p, e) in enumerate(zip(plans, expls, strict=True)) if e
                 for t in p.texts]  # fmt: skip
        answers = run_requests([m for _, m in tasks], lambda m: ask(m, 1, cfg.logprobs), job.concurrency)
    judged: list[list[llm.Judgement]] = [[] for _ in plans]
    for (i, _), reply in zip(tasks, answers, strict=True):
        judged[i].append(_judgement(reply))
    results = []
    for p, e, js in zip(plans, expls, judged, strict=True):
        score, kind = llm.detection_score(js, p.label) if e else (float("nan"), "none")
        results.append(llm.LatentResult(p.latent, e, score, kind, len(js)))
    return results


def _judgement(reply: dict) -> llm.Judgement:
    """A detection answer; one that says neither 1 nor 0 counts as 0 (the explanation did not apply)."""
    choice = reply["choices"][0]
    top = None
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list) and lp["content"]:
        first = lp["content"][0]
        top = first.get("top_logprobs") if isinstance(first, dict) else None
    try:
        return llm.parse_judgement(check_reply(reply), top if isinstance(top, list) else None)
    except ValueError:
        return llm.Judgement(0.0, False)


def _republish(store: FeatureStore, table: pd.DataFrame, model: str, cfg: llm.LLMConfig) -> None:
    """Publish the store anew with `table` (examples and definition copied as they are, the summary updated)."""
    run = store.folder.parent
    summary = {k: v for k, v in store.summary.items() if k not in ("format", "format_version")}
    explained = table["llm_model"].astype(str) != ""
    summary["llm"] = {
        "mode": cfg.mode,
        "models": sorted(set(table.loc[explained, "llm_model"].astype(str))),
        "prompt_version": llm.PROMPT_VERSION,
        "explained": int(explained.sum()),
        "named": int(table["llm_named"].sum()),
    }
    if cfg.mode == "lbl":
        fs = summarize(table)
        summary.update(well_defined=fs.well_defined, flagged=fs.flagged, token_anchored=fs.token_anchored,
                       flagged_by_describer=fs.flagged_by_describer)  # fmt: skip
    tmp = prepare(run, overwrite=True)
    for name in (EXAMPLES_FILE, DEFINITION_FILE):
        shutil.copy2(store.folder / name, tmp / name)
    store.close()
    write_table(tmp / TABLE_FILE, table)
    write_summary(tmp, summary)
    publish(tmp, run)
