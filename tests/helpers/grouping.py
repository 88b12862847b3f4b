"""Under `pytest -n N`, run the tests that share an expensive fixture on one xdist worker (a pytest plugin, listed
in tests/conftest.py's `pytest_plugins`).

xdist's default `load` distribution deals the first quarter of the tests out one by one, alternately, and later
ones in chunks, so a module's tests land on both workers and each worker builds the module's module-scoped fixtures
(a reference cache, a torchrun launch, a trained ensemble) and the session's `scored_run` (about 90 s of one core).
Here the tests are grouped, and a group is scheduled as one unit:

- tests that use a module-scoped fixture: by module;
- tests that use a fixture of SHARED_SESSION_FIXTURES: by that fixture;
- groups that share a test: merged. Every other test is a unit of its own, so the balancing stays per test.

xdist's own `--dist loadgroup` would do the scheduling, but it marks groups by appending "@GROUP" to `item._nodeid`,
which pytest 9 no longer reads. So each worker writes its {test id: group} to a file under the session's temporary
folder (named in the worker's `workerinput`) after collecting, and the controller's scheduler, a LoadScopeScheduling
whose scope of a test is its group, reads it once every worker has collected. Grouping only decides which worker runs
a test; fixtures stay per worker, so no test depends on another's order. Without `-n` none of this runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_SESSION_FIXTURES = ("scored_run",)
"""Session fixtures too expensive to build once per worker."""

GROUPS_FILE = "xenofeat_groups_file"  # the workerinput key naming the worker's {test id: group} file


def groups_of(items: list[pytest.Item]) -> dict[str, str]:
    """{test id: group} of the tests that share an expensive fixture (see the module docstring)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys_of: dict[str, list[str]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures a test uses (closure)
        defs = info.name2fixturedefs if info is not None else {}
        keys = [name for name in SHARED_SESSION_FIXTURES if name in defs]
        if any(d.scope == "module" for fixturedefs in defs.values() for d in fixturedefs):
            keys.append(item.nodeid.split("::")[0])
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        if keys:
            keys_of[item.nodeid] = keys
    return {nodeid: "group:" + root(keys[0]) for nodeid, keys in keys_of.items()}


@pytest.hookimpl(tryfirst=True)  # before xdist tells the controller it has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    """On a worker of a grouped run: write the groups of the collected tests where the controller will read them."""
    path = getattr(session.config, "workerinput", {}).get(GROUPS_FILE)
    if path:
        Path(path).write_text(json.dumps(groups_of(session.items)), encoding="utf-8")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # noqa: ANN401 - xdist's WorkerController
    """On the controller: name each worker's groups file (in the controller's temporary folder)."""
    if node.config.getoption("dist") == "load":
        base = (
            node.config._tmp_path_factory.getbasetemp()
        )  # as xdist itself finds it for the workers' folders
        node.workerinput[GROUPS_FILE] = str(base / f"groups-{node.workerinput['workerid']}.json")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:  # noqa: ANN401 - xdist's types
    """Replace xdist's default `load` scheduler with the grouped one (other --dist modes are left alone)."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """LoadScopeScheduling whose scope of a test is its group, or the test itself."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first asked once every worker has collected (and written its file)
                self.groups = {}
                for path in sorted(config._tmp_path_factory.getbasetemp().glob("groups-*.json")):
                    self.groups.update(json.loads(path.read_text(encoding="utf-8")))
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)
