"""The viewer renders data and never fetches for it, checked in headless chromium.

A run whose folder name, vocabulary (so readable forms and highlighted windows), and feature set (name, description,
created, updated) hold Markdown images, raw HTML, scripts and backticks pointing at a loopback HTTP listener. The
overview, a feature page, the table and the Sets page are opened; the listener must see no request, every request the
page makes must go to the viewer's own origin, no script from the data may run, and the strings must be on the page
as literal text. Skips without chromium or playwright (.ci/browser-deps installs both).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers.demo_store import WORDS, build_random_store
from tests.helpers.served import ARGS, CHROMIUM, browser, settle, viewer

PNG = bytes.fromhex(  # a 1x1 transparent PNG, so a fetched image would load and show
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@contextmanager
def listener() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server on a free port that records every connection and the path of every request (a TLS
    handshake, from an https: URL, is a connection without a path); yields (port, records)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            seen.append("connection")
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def hostile_strings(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        "image": f"![p]({url}/vocab-image.png)",
        "ticks": f"`![p]({url}/vocab-ticks.png)`",
        "tag": f"<img src={url}/vocab-tag.png onerror=window.__xf_ran=1>",
        "script": "<script>window.__xf_ran=2</script>",
        "latex": "$x^2$ :smile:",
        "set_name": "<img src=x onerror=window.__xf_ran=3> `set` ![p](set.png)",
        "description": f"![p]({url}/set-description.png) <script>window.__xf_ran=4</script>",
        "created": f"![p]({url}/set-created.png)",
        "updated": f"<img src={url}/set-updated.png>",
    }


def build_run(root: Path, port: int) -> tuple[Path, dict[str, str]]:
    h = hostile_strings(port)
    # A backtick ends the sidebar's code span before the image; a folder path holds no `//`, but on an http: page
    # browsers read `https:/host/x` as https://host/x.
    run = root / "a`b" / "![p](https:" / f"127.0.0.1:{port}" / "run-folder.png) <b>$y$</b>"
    build_random_store(run, 24, vocab=[h["image"], h["ticks"], h["tag"], h["script"], h["latex"], *WORDS])
    sets = {
        "format": "xenofeat.feature-sets",
        "format_version": "1.0",
        "sets": {
            h["set_name"]: {
                "name": h["set_name"],
                "description": h["description"],
                "features": [0, 1],
                "created": h["created"],
                "updated": h["updated"],
            }
        },
    }
    (run / "features" / "sets.json").write_text(json.dumps(sets), encoding="utf-8")
    return run, h


def visit(page, url: str) -> str:  # noqa: ANN001 - playwright Page
    """Open `url`, wait until Streamlit has drawn it and the charts had their turn; returns the page's text."""
    page.goto(url)
    settle(page)
    page.wait_for_load_state("networkidle")
    return page.inner_text("body")


@pytest.mark.browser
def test_the_viewer_fetches_nothing_named_by_its_data(tmp_path):
    pw_ctx = browser()
    with listener() as (port, fetched):
        run, h = build_run(tmp_path, port)
        with viewer(run, tmp_path / "viewer.log") as url, pw_ctx as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            origins: set[str] = set()
            page.on("request", lambda r: origins.add(origin(r.url)))
            texts = {
                name: visit(page, f"{url}/{query}")
                for name, query in (
                    ("overview", ""),
                    ("feature 1", "?feature=1"),  # readable form names the backticked image token
                    ("feature 2", "?feature=2"),  # ... the <img> tag token
                    ("table", "?page=table"),
                    ("sets", "?page=sets"),
                )
            }
            ran = page.evaluate("window.__xf_ran === undefined ? null : window.__xf_ran")
            images_from_data = page.locator("img[alt='p']").count()
            b.close()
    assert fetched == [], f"the page fetched URLs named by the run's data: {fetched}"
    assert origins <= {origin(url), "local"}, origins
    assert ran is None, f"a script from the data ran ({ran})"
    assert images_from_data == 0
    for name, text in texts.items():
        assert str(run) in text, f"{name}: the run folder's name is not shown literally"
    assert h["ticks"] in texts["feature 1"] and h["tag"] in texts["feature 2"]
    # the set's `created` holds Markdown, not an ISO-8601 time, so the store refuses the set on read: the Sets page
    # says so, quoting the bad values literally (and fetching nothing, as asserted above)
    assert "is not an ISO-8601 time" in texts["sets"] and "![p](http://127.0.0.1" in texts["sets"]


def origin(url: str) -> str:
    """scheme://host:port of an http(s) or ws(s) URL; data: and blob: URLs (nothing fetched) count as the page's."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "local"
