"""The viewer in a real browser: `xenofeat view` on a small scored run, Debian's chromium driven by playwright.

Opens a flagged latent from the overview, scores a label in the label tester, adds the latent to a feature set and
downloads the set's JSON export, and saves a screenshot to `artifacts/` (the CI artefact). Skips with a reason when
chromium or playwright is missing; `.ci/browser-deps` installs both. Run as a module (`python -m
tests.browser.test_browser RUN` from the repository root) it takes the README screenshots into docs/ instead.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers.served import ARGS, CHROMIUM, REPO, browser, settle, viewer

ARTIFACTS = REPO / "artifacts"


def open_flagged(page) -> str:  # noqa: ANN001
    """From the overview, open the first flagged latent; returns its page header."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSelectbox").filter(has_text="Open a flagged latent").click()
    page.get_by_role("option").first.click()
    settle(page)
    header = page.get_by_role("heading", name=re.compile(r"· FLAGGED$"))  # not "Why it is flagged"
    expect(header).to_be_visible(timeout=20_000)
    return header.inner_text()


@pytest.mark.browser
def test_flagged_feature_label_and_export_in_chromium(scored_run, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    pw_ctx = browser()
    run = tmp_path / "run"
    shutil.copytree(scored_run.run / "features", run / "features")  # the session's run stays untouched
    ARTIFACTS.mkdir(exist_ok=True)
    with viewer(run, tmp_path / "viewer.log") as url, pw_ctx as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(url)
        settle(page)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        header = open_flagged(page)
        latent = int(header.split()[1])

        page.get_by_role("textbox", name="your label").fill("tok2, tok3")
        page.get_by_role("button", name="Score it").click()
        settle(page)
        expect(page.get_by_test_id("stMetric").filter(has_text="AUROC (yours)")).to_be_visible()
        expect(page.get_by_text("Labels tried on latent")).to_be_visible()

        page.get_by_role("textbox", name="new set name").fill("from the browser")
        page.get_by_role("button", name="Add 1 latent to the set").click()
        settle(page)
        expect(page.get_by_text("set 'from the browser' now has 1 latents")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "browser-feature-page.png"), full_page=True)

        page.get_by_test_id("stSidebar").get_by_text("Sets", exact=True).click()
        settle(page)
        with page.expect_download() as dl:
            page.get_by_test_id("stDownloadButton").get_by_role("button").click()
        doc = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
        b.close()
    assert doc["name"] == "from the browser"
    assert [f["index"] for f in doc["features"]] == [latent]  # the `json` export format
    tried = [json.loads(x) for x in (run / "features" / "labels.jsonl").read_text().splitlines()]
    assert [(t["latent"], t["text"]) for t in tried] == [(latent, "tok2, tok3")]


def take_readme_screenshots(run: Path, out: Path) -> None:
    """docs/overview.png and docs/feature_page.png of a run (a flagged latent's page)."""
    from playwright.sync_api import sync_playwright

    with viewer(run, out / ".viewer.log") as url, sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        settle(page)
        page.wait_for_timeout(1500)  # let the vega charts draw
        page.screenshot(path=str(out / "overview.png"), full_page=True)
        open_flagged(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "feature_page.png"), full_page=True)
        b.close()
    (out / ".viewer.log").unlink(missing_ok=True)


if __name__ == "__main__":
    take_readme_screenshots(Path(sys.argv[1]), REPO / "docs")
