"""The `default+packages` corpus: the default first, then installed packages' docstrings in turn, deterministic."""

from __future__ import annotations

import itertools

from activations.corpus import PACKAGES_SPEC, default_corpus, installed_packages, load_corpus


def _head(n: int) -> list[tuple[str, str]]:
    return [(d.text, d.source) for d in itertools.islice(load_corpus(PACKAGES_SPEC), n)]


def test_packages_corpus_grows_the_default_and_interleaves_the_packages():
    base = [(d.text, d.source) for d in default_corpus()]
    installed = installed_packages()
    names = [name for name, _, _ in installed]
    assert names[:2] == ["torch", "numpy"]  # xenofeat's own dependencies: every install has them
    head = _head(len(base) + 3 * len(names))
    assert head[: len(base)] == base  # a prefix of the default's size is the default itself
    grown = head[len(base) :]
    # one document from each package in turn, in PACKAGES' order (until a package runs out, which none does here)
    assert [src.split(":", 1)[0] for _, src in grown] == names * 3
    assert all(len(text) >= 200 for text, _ in grown)  # docstrings of at least MIN_DOC_CHARS
    assert head == _head(len(head))  # deterministic: the same documents in the same order again
