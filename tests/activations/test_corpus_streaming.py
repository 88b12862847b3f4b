"""Corpora are read and tokenised in bounded pieces, reading stops at --max-tokens, and normal corpora pack as before.

`_reference_pack` below is the packing as it was before pieces existed (whole documents to the tokenizer, files read
whole), kept here as the independent expectation: the default corpus and small corpora must pack byte-identically.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activations.corpus import MAX_PIECE_CHARS, load_corpus, split_pieces
from activations.errors import UserError
from activations.sequences import pack_corpus
from tests.helpers.common import PROSE, REPO


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from activations.model import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


# --- the reference: the packing before this change (documents whole, files read whole) ------------------------------


def _reference_docs(spec: str, split: str) -> list[str]:
    from activations.corpus import _files, _group_paragraphs, default_corpus

    if spec == "default":
        return [d.text for d in default_corpus()]
    texts: list[str] = []
    for path in _files(spec):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if split == "paragraphs":
            texts += [d.text for d in _group_paragraphs(text.split("\n\n"), str(path))]
        elif text.strip():
            texts.append(text)
    return texts


def _reference_flat(texts: list[str], tokenizer, budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    content, owners, places, total = [], [], [], 0
    for start in range(0, len(texts), 256):
        encoded = tokenizer(texts[start : start + 256], add_special_tokens=False, verbose=False)["input_ids"]
        for j, ids in enumerate(encoded):
            if total >= budget:
                break
            ids = np.asarray(ids[: budget - total], np.int32)
            if len(ids):
                content.append(ids)
                owners.append(np.full(len(ids), start + j, np.int32))
                places.append(np.arange(len(ids), dtype=np.int32))
                total += len(ids)
        if total >= budget:
            break
    return np.concatenate(content), np.concatenate(owners), np.concatenate(places)


def _tokens_of(packed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The text tokens of a packed corpus in order, with their document ids and positions (specials dropped)."""
    text = ~packed.mask
    return packed.tokens[text], packed.doc_ids[text], packed.positions[text]


def _digest(packed) -> str:
    h = hashlib.sha256()
    for a in (packed.tokens, packed.doc_ids, packed.positions, packed.mask, packed.attention):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    prose = root / "prose"
    prose.mkdir()
    for i in range(12):
        (prose / f"doc{i:02d}.txt").write_text(
            " ".join(PROSE[(i + j) % len(PROSE)] for j in range(3)), encoding="utf-8"
        )
    (prose / "blank.txt").write_text("  \n\n \t ", encoding="utf-8")
    (prose / "bad.txt").write_bytes(b"ok text \xff\xfe")
    long = root / "long"
    long.mkdir()
    rng = np.random.default_rng(0)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    text = "\n\n".join(" ".join(rng.choice(words, 40)) + "." for _ in range(4000))  # ~1M characters
    (long / "a.txt").write_text(text, encoding="utf-8")
    (long / "b.txt").write_text("x" * 1000 + " tail words here", encoding="utf-8")
    return {"prose": prose, "long": long}


# digests of the packing before this change (recorded with the previous code on these exact inputs)
RECORDED = {
    ("prose", "file", 32, None): "abfd4744eda83a15",
    ("prose", "paragraphs", 32, None): "abfd4744eda83a15",
    ("prose", "file", 32, 300): "461d0a3a638d0b9a",
    ("long", "file", 128, None): "2e6887a67a62ea96",
    ("long", "paragraphs", 128, None): "8b02bad21424c9a4",
    ("long", "file", 128, 7777): "3520a3d3fc06171e",
}


@pytest.mark.parametrize("case", list(RECORDED), ids=lambda c: "-".join(map(str, c)))
def test_small_and_long_corpora_pack_as_before(tokenizer, corpora, case):
    name, split, L, max_tokens = case
    packed = pack_corpus(
        load_corpus(str(corpora[name]), split=split), tokenizer, L, max_tokens, progress=False
    )
    assert _digest(packed) == RECORDED[case]
    flat, owner, place = _reference_flat(
        _reference_docs(str(corpora[name]), split), tokenizer, max_tokens or 2**62
    )
    got = _tokens_of(packed)
    np.testing.assert_array_equal(got[0], flat)
    np.testing.assert_array_equal(got[1], owner)
    np.testing.assert_array_equal(got[2], place)


def test_default_corpus_packs_as_before(tokenizer):
    packed = pack_corpus(load_corpus("default"), tokenizer, 128, None, progress=False)
    flat, owner, place = _reference_flat(_reference_docs("default", "file"), tokenizer, 2**62)
    got = _tokens_of(packed)
    np.testing.assert_array_equal(got[0], flat)
    np.testing.assert_array_equal(got[1], owner)
    np.testing.assert_array_equal(got[2], place)
    assert packed.n_documents == int(owner.max()) + 1


# --- pieces ----------------------------------------------------------------------------------------------------------


def test_split_pieces_cuts_before_a_space_after_a_word_and_keeps_every_character():
    text = ("lorem ipsum dolor " * 20_000).strip()
    pieces, rest = split_pieces(text)
    assert rest == "" and "".join(pieces) == text
    assert all(len(p) <= MAX_PIECE_CHARS for p in pieces)
    assert all(p[-1].isalnum() for p in pieces[:-1])  # every cut is right after a word ...
    assert all(p[0] == " " for p in pieces[1:])  # ... and before the space that follows it
    no_space = "A" * (3 * MAX_PIECE_CHARS + 5)
    pieces, _ = split_pieces(no_space)
    assert [len(p) for p in pieces] == [MAX_PIECE_CHARS] * 3 + [5]
    assert split_pieces("short text") == (["short text"], "")


def test_long_single_line_tokenises_like_the_whole_line(tokenizer, tmp_path):
    """A 1 MB line goes to the tokenizer in pieces; the tokens equal those of the whole line."""
    rng = np.random.default_rng(1)
    words = np.array(["model", "feature", "token,", "cache.", "sparse", "(latent)", "x" * 30])
    line = " ".join(rng.choice(words, 150_000))
    (tmp_path / "line.txt").write_text(line, encoding="utf-8")
    packed = pack_corpus(load_corpus(str(tmp_path / "line.txt")), tokenizer, 128, None, progress=False)
    whole = tokenizer([line], add_special_tokens=False, verbose=False)["input_ids"][0]
    tokens, docs, positions = _tokens_of(packed)
    np.testing.assert_array_equal(tokens, np.asarray(whole, np.int32))
    assert set(docs.tolist()) == {0}
    np.testing.assert_array_equal(positions, np.arange(len(whole)))


# --- reading stops at --max-tokens; files not UTF-8 are still skipped as a whole ----------------------------------


def test_reading_stops_at_max_tokens(tokenizer, tmp_path):
    """Invalid bytes at the end of a 2 MB file are never read when --max-tokens is reached long before them."""
    path = tmp_path / "big.txt"
    path.write_bytes(("plain words of text " * 100_000).encode() + b"\xff\xfe")
    packed = pack_corpus(load_corpus(str(path)), tokenizer, 64, 500, progress=False)
    assert int((~packed.mask).sum()) == 500
    with pytest.raises(UserError, match="not UTF-8"):  # read to the end, the file is skipped as before
        pack_corpus(load_corpus(str(path)), tokenizer, 64, None, progress=False)


def test_file_not_utf8_late_is_dropped_whole_and_ids_stay_dense(tokenizer, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a.txt").write_text("first document text", encoding="utf-8")
    (d / "b.txt").write_bytes(("valid start " * 50_000).encode() + b"\xff")  # bad after several pieces
    (d / "c.txt").write_text("third document text", encoding="utf-8")
    packed = pack_corpus(load_corpus(str(d)), tokenizer, 32, None, progress=False)
    tokens, docs, _ = _tokens_of(packed)
    expect = tokenizer(["first document text", "third document text"], add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(tokens, np.concatenate([np.asarray(e, np.int32) for e in expect]))
    assert sorted(set(docs.tolist())) == [0, 1]


# --- peak memory, in a child process -------------------------------------------------------------------------------

_CHILD = """
import json, resource, sys
from transformers import AutoTokenizer
from activations.corpus import load_corpus
from activations.model import embedded_model_dir
from activations.sequences import pack_corpus
tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
tok(["warm up the tokenizer"], add_special_tokens=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
packed = pack_corpus(load_corpus(sys.argv[1]), tok, 128, int(sys.argv[2]), progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mib": (after - before) / 1024, "tokens": int((~packed.mask).sum())}))
"""


def _peak_growth(corpus: Path, max_tokens: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), str(max_tokens)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["words", "base64"])
def test_a_20mb_single_line_does_not_grow_memory(tmp_path, kind):
    """Before: the whole line went to the tokenizer (~70 bytes per character: 1.4 GB here, 3.4 GB for 50 MB)."""
    path = tmp_path / "one-line.txt"
    rng = np.random.default_rng(0)
    if kind == "words":
        block = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"], 200_000))
    else:
        import base64

        block = base64.b64encode(rng.bytes(750_000)).decode("ascii")
    with path.open("w", encoding="ascii") as fh:
        for _ in range(20_000_000 // len(block) + 1):
            fh.write(block)
    res = _peak_growth(path, 20_000)
    assert res["tokens"] == 20_000
    assert res["grew_mib"] < 200, res


def test_jsonl_not_utf8_is_skipped_not_a_traceback(tokenizer, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "good line of text"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    packed = pack_corpus(load_corpus(str(tmp_path)), tokenizer, 32, None, progress=False)
    tokens, docs, _ = _tokens_of(packed)
    expect = tokenizer(["good line of text"], add_special_tokens=False)["input_ids"][0]
    np.testing.assert_array_equal(tokens, np.asarray(expect, np.int32))
    assert set(docs.tolist()) == {0}
