"""`torchrun ... xenofeat score RUN`: one rank's part of a distributed score, and its one-line errors.

`features.score.score` does the work for every rank (see its docstring for who does what); this module starts the
process group, checks that every rank was started with the same job, and turns a failure into exactly one
`xenofeat: error:` line (rank 0's) and exit status 2 on every rank, as `xenofeat cache` does under torchrun.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from activations.distributed import SharedError, World, on_ranks

SCORE_TIMEOUT = timedelta(hours=12)
"""How long a rank waits in a collective: the other ranks wait while rank 0 alone runs the criteria (C2's matching
and C3 with the model take hours at 65k latents), and for `xenofeat run` while the ranks that trained fewer
members wait for the others."""


def job_difference(jobs: list[dict[str, Any]]) -> str | None:
    """The first setting in which a rank's job differs from rank 0's, as a sentence; None when all agree."""
    first = jobs[0]
    for rank, other in enumerate(jobs[1:], start=1):
        for key in first:
            if first[key] != other.get(key):
                return (
                    f"the ranks were started with different arguments ({key}: rank 0 has {first[key]!r}, "
                    f"rank {rank} has {other.get(key)!r}); start every rank with the same command"
                )
    return None


def agree_on_values(world: World, values: dict[str, Any]) -> None:
    """SharedError on every rank when the ranks' `values` (their arguments) differ, before anything is written."""
    problem = job_difference(world.all_gather({k: str(v) for k, v in values.items()}))
    if problem is not None:
        raise SharedError(problem)


def agree_on_job(world: World, job: Any) -> None:  # noqa: ANN401 - a dataclass job (ScoreJob)
    """`agree_on_values` on a job's fields (but `progress`)."""
    agree_on_values(world, {k: v for k, v in asdict(job).items() if k != "progress"})


def score_command(job: Any, world: World) -> int:  # noqa: ANN401 - features.score.ScoreJob
    """One rank of `xenofeat score` under torchrun; rank 0 prints the summary."""
    from features.cli.summary import summary_text
    from features.score import score

    def work() -> Any:  # noqa: ANN401
        agree_on_job(world, job)
        return score(job, world)

    code, res = on_ranks(world, work, SCORE_TIMEOUT)
    if res is not None:
        sys.stdout.write(summary_text(res.summary, res.folder))
    return code
