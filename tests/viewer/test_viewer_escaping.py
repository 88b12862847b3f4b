"""Strings the viewer does not control (vocabulary tokens, readable forms, set fields, the run folder's name, the URL,
what a person types) are shown as literal text: `viewer.render.md_text` / `md_code` checked with an independent
CommonMark parser (markdown-it-py), then every page of a run full of such strings under AppTest.

The browser-level check (no request leaves the viewer's origin) is tests/browser/test_escaping_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from activations.errors import UserError
from features.store import FeatureStore
from features.store.sets import load_sets
from tests.helpers.common import REPO
from tests.helpers.demo_store import WORDS, build_random_store
from viewer.render import md_code, md_text

APP = str(REPO / "viewer" / "app.py")
URL = (
    "http://127.0.0.1:9"  # nothing listens there; the browser test counts requests to a live listener instead
)
HOSTILE = [
    f"![p]({URL}/img.png)",
    f"`![p]({URL}/tick.png)`",
    f"<img src={URL}/tag.png onerror=alert(1)>",
    "<script>alert(1)</script>",
    "$x^2$ :smile: :material/home: :red[r]",
    "[link](javascript:alert(1))",
    "``double`` ` one",
    "- list\n\n# heading\r\n1. item",
    "a\\b\\`c\\",
    "&amp; &#60;b&#62;",
    "**bold** _it_ ~~s~~ | t |",
    "1) x",
]
MARKUP = {  # what a CommonMark parser may make of text; none of it may come out of md_text or md_code
    "image", "link_open", "html_inline", "html_block", "fence", "code_block", "heading_open",
    "bullet_list_open", "ordered_list_open", "table_open", "s_open", "em_open", "strong_open", "hr",
    "blockquote_open", "softbreak", "hardbreak",
}  # fmt: skip
PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# Streamlit's own extensions (emoji, icons, colour directives, LaTeX) and CommonMark's images, links and HTML all
# start with one of these; md_text must leave none of them unescaped.
STREAMLIT_SPECIAL = set(":$/[]<>!&`*_~|#\\")


def rendered(md: str) -> tuple[str, set[str]]:
    """(the text a CommonMark renderer shows for `md`, code spans included; the kinds of tokens it made)."""
    text, kinds = [], set()
    for tok in PARSER.parse(md):
        kinds.add(tok.type)
        for child in tok.children or []:
            kinds.add(child.type)
            if child.type in ("text", "code_inline"):
                text.append(child.content)
    return "".join(text), kinds


def one_line(s: str) -> str:
    return s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def unescaped(md: str) -> set[str]:
    """Characters of `md` not preceded by an escaping backslash."""
    out, i = set(), 0
    while i < len(md):
        if md[i] == "\\" and i + 1 < len(md):
            i += 2
            continue
        out.add(md[i])
        i += 1
    return out


@pytest.mark.parametrize("s", HOSTILE)
def test_md_text_renders_as_the_literal_string(s):
    text, kinds = rendered(md_text(s))
    assert text == one_line(s)
    assert not kinds & MARKUP, kinds
    assert not unescaped(md_text(s)) & STREAMLIT_SPECIAL


@pytest.mark.parametrize("s", [*HOSTILE, "`", "``x", "x`", "plain"])
def test_md_code_is_one_code_span_of_the_literal_string(s):
    tokens = PARSER.parse(f"readable: {md_code(s)}")
    children = [c for t in tokens for c in t.children or []]
    assert [c.type for c in children] == ["text", "code_inline"]
    assert children[1].content == one_line(s)


def test_ordinary_messages_stay_readable():
    assert md_text("latent 48: out of range; this run has latents 0 to 47") == (
        "latent 48\\: out of range; this run has latents 0 to 47"
    )
    assert md_text("URL ?feature=-1") == "URL ?feature=-1"


# --- the app on a run full of hostile strings -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def hostile_run(tmp_path: Path) -> Path:
    """A random store whose folder name, vocabulary, readable forms and feature set hold Markdown, HTML and URLs."""
    # `http:/host/x` is what a folder path can hold (no `//`), and browsers read it as http://host/x
    run = tmp_path / "a`b" / "![p](http:" / "127.0.0.1:9" / "dir.png) <b>$y$</b>"
    build_random_store(run, 24, vocab=[*HOSTILE, *WORDS])
    sets = {
        "format": "xenofeat.feature-sets",
        "format_version": "1.0",
        "sets": {
            SET_NAME: {
                "name": SET_NAME,
                "description": f"![p]({URL}/desc.png) <script>alert(1)</script>",
                "features": [0, 1],
                "created": f"![p]({URL}/created.png)",
                "updated": "`<img src=x>`",
            }
        },
    }
    (run / "features" / "sets.json").write_text(json.dumps(sets), encoding="utf-8")
    return run


SET_NAME = "<img src=x onerror=alert(1)> `set` ![p](x.png) $y$"


def app(run: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("XENOFEAT_RUN", str(run))
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def shown(at: AppTest) -> list[str]:
    """Every Markdown-rendered text of the page (Markdown, captions, alerts, headers, metric labels) as displayed;
    asserts that none of it became an image, a link, HTML or any other markup than the viewer's own bold."""
    assert not at.exception, [e.value for e in at.exception]
    sources = [
        e.value
        for kind in ("markdown", "caption", "error", "warning", "success", "info")
        for e in at.get(kind)
    ]
    sources += [e.value for e in (*at.header, *at.subheader)] + [m.label for m in at.metric]
    out = []
    for src in sources:
        text, kinds = rendered(src)
        assert not kinds & (MARKUP - {"strong_open"}), (src, kinds)
        out.append(text)
    return out


def test_folder_name_readable_form_and_hypothesis_are_literal(hostile_run, monkeypatch):
    table = FeatureStore.open(hostile_run).table
    at = app(
        hostile_run, monkeypatch, feature="1"
    )  # latent 1's readable form names HOSTILE[1], with backticks
    texts = shown(at)
    assert f"xenofeat · {hostile_run}" in texts  # the sidebar
    readable = table.at[1, "readable"]
    assert HOSTILE[1] in readable and f"Best describer's readable form: {readable}" in texts

    hypothesis = f"`{HOSTILE[0]}"  # breaks out of a single-backtick code span
    at.radio(key="lt_kind_1").set_value("regex")
    at.text_input(key="lt_text_1").input(hypothesis)
    next(b for b in at.button if b.label == "Score it").click().run()
    assert any(t.startswith(f"regex {hypothesis} on ") for t in shown(at)), shown(at)


def test_typed_and_url_strings_are_literal_in_messages(hostile_run, monkeypatch):
    bad = f"![p]({URL}/url.png)"
    at = app(hostile_run, monkeypatch, feature=bad)
    assert any(f"?feature={bad}" in t for t in shown(at)), shown(at)
    at.text_input(key="fp_goto").input(HOSTILE[2]).run()
    assert any(HOSTILE[2] in t for t in shown(at)), shown(at)

    at.sidebar.radio(key="page").set_value("Features").run()
    at.text_input(key="tb_idx").input(bad).run()
    assert any(f"cannot read '{bad}'" in t for t in shown(at)), shown(at)
    at.text_input(key="tb_idx").input("")
    at.text_input(key="tb_tok").input(HOSTILE[4] + " nowhere").run()
    assert any(f"token '{HOSTILE[4]} nowhere': not in the vocabulary" in t for t in shown(at)), shown(at)


def test_set_fields_are_literal_on_the_sets_page(hostile_run, monkeypatch):
    try:
        fs = load_sets(hostile_run)[SET_NAME]
    except UserError:  # a reader that validates `created` refuses the file: then its message must be literal
        fs = None
    at = app(hostile_run, monkeypatch, page="sets")
    texts = shown(at)
    if fs is None:
        assert len(at.error) == 1, texts
        return
    assert at.selectbox(key="sp_pick").value == SET_NAME
    assert any(t.startswith(f"created {fs.created} · updated {fs.updated} · 2 latents") for t in texts), texts
    assert at.text_area(key=f"sp_desc_{SET_NAME}").value == fs.description  # a text area shows it verbatim
    at.button(key="sp_delete").click().run()  # a set with any such name can still be deleted
    shown(at)
    assert SET_NAME not in load_sets(hostile_run)
