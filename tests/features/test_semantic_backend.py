"""The semantic describer's sentence-embedding backend: one topic told in other words is found by the embedded
MiniLM's sentence embedding and not by TF-IDF, and `semantic_backend` is validated (one line naming the key)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from features.labelability import LBLConfig, labelability
from features.labelability.embedding import load_embedder, piece_style, window_text
from features.labelability.windows import split_documents

torch.set_num_threads(1)

# Each topic has a train phrasing and a test phrasing with no content word in common: the latent fires on the
# "copying files" topic; test documents tell it (and every other topic) in words no train document uses.
TOPICS = {
    "copy": (
        ["copy the file to the destination path", "copy every file from the source path",
         "the copied file keeps its destination path"],
        ["duplicate it into the target folder", "clone the folder onto another disk",
         "replicate those documents inside a backup location"],
    ),
    "cooking": (
        ["boil the pasta in salted water", "stir the sauce and add garlic", "bake the bread until golden"],
        ["fry an onion with butter", "simmer soup over low heat", "roast potatoes alongside carrots"],
    ),
    "weather": (
        ["heavy rain is expected tomorrow", "the storm brings strong wind", "a cold front arrives tonight"],
        ["sunny skies across coastal regions", "snowfall blankets mountain villages", "humid afternoons with thunder"],
    ),
    "football": (
        ["the striker scored a late goal", "the keeper saved a penalty kick", "fans cheered the winning team"],
        ["a defender blocked his shot", "midfielders passed quickly forward", "referee showed one red card"],
    ),
}  # fmt: skip
N_DOCS, L = 120, 40


def topic_corpus(seed: int = 0):
    """One document per sequence (position 0 masked, a CLS); its topic and phrasing (train or test, as the document
    split of `seed` will put it) decide its words. Latent 0 fires on every token of the "copy" documents from
    position 4 on."""
    rng = np.random.default_rng(seed)
    doc_ids = np.repeat(np.arange(N_DOCS), L).reshape(N_DOCS, L)
    mask = np.zeros((N_DOCS, L), bool)
    mask[:, 0] = True
    is_test = split_documents(doc_ids, mask, seed, 0.5)[:, 1]
    topic_of = np.array(list(TOPICS))[np.arange(N_DOCS) % len(TOPICS)]
    words: list[list[str]] = []
    for d in range(N_DOCS):
        sentences = TOPICS[topic_of[d]][int(is_test[d])]
        doc: list[str] = ["[CLS]"]
        while len(doc) < L:
            doc += sentences[rng.integers(len(sentences))].split()
        words.append(doc[:L])
    vocab = sorted({w for doc in words for w in doc})
    tokens = np.array([[vocab.index(w) for w in doc] for doc in words])
    fires = (topic_of == "copy")[:, None] & (np.arange(L)[None, :] >= 4)
    values = rng.uniform(0.5, 5.0, size=fires.shape) * fires
    acts = sp.csc_matrix(values.reshape(-1, 1))
    return acts, tokens, doc_ids, mask, vocab


CFG = LBLConfig(max_positives=100, bootstrap=20, prune=False)


@pytest.fixture(scope="module")
def corpus():
    return topic_corpus()


def test_other_words_for_one_topic_are_found_by_the_embedding_not_by_tfidf(corpus):
    acts, tokens, doc_ids, mask, vocab = corpus
    args = (acts, tokens, doc_ids, mask, np.array([0]))
    tfidf = labelability(*args, CFG, seed=0, vocab=vocab, progress=False)
    minilm = labelability(
        *args, dataclasses.replace(CFG, semantic_backend="minilm"), seed=0, vocab=vocab, progress=False
    )
    # the windows and the other describers are untouched by the backend
    np.testing.assert_array_equal(tfidf.test_windows[0].flat_idx, minilm.test_windows[0].flat_idx)
    assert tfidf.aurocs["token"][0] == minilm.aurocs["token"][0]
    # test windows share no content word with train windows: words alone cannot tell the topic
    assert tfidf.aurocs["semantic"][0] < 0.7 and tfidf.aurocs["token"][0] < 0.7
    assert minilm.aurocs["semantic"][0] >= 0.9
    assert minilm.best_describer[0] == "semantic" and minilm.labelability[0] >= 0.8
    assert "MiniLM" in minilm.readable[0] and "path" in minilm.readable[0]  # a train positive, readable


def test_window_text_joins_the_pieces_of_each_tokenizer_style():
    ids = np.array([-1, 0, 1, 2])
    assert window_text(ids, ["copy", "##ing", "files"], "wordpiece") == "copying files"
    assert window_text(ids, ["copy", "ing", "Ġfiles"], "bytelevel") == "copying files"
    assert window_text(ids, ["▁copy", "ing", "▁files"], "sentencepiece") == "copying files"
    assert piece_style(["the", "##s", "a"]) == "wordpiece" and piece_style(["Ġthe", "s"]) == "bytelevel"
    assert piece_style(["▁the", "s"]) == "sentencepiece" and piece_style(["the", "cat"]) == "wordpiece"


def test_minilm_backend_is_the_models_own_sentence_transformers_recipe():
    """ "minilm" (plain transformers, mean pooling, normalised) embeds exactly as sentence-transformers loading the
    same folder as a local-folder backend does."""
    from activations.model import embedded_model_dir

    folder = str(embedded_model_dir())
    assert LBLConfig(semantic_backend=folder).semantic_backend == folder
    texts = ["copy the file to the destination path", "duplicate it into the target folder", "a"]
    ours = load_embedder("minilm", 2).embed(texts)
    theirs = load_embedder(folder, 2).embed(texts)
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bad", ["bert", "", "/no/such/model/folder", "EMPTY"])
def test_unknown_backend_is_refused_naming_the_key(bad, tmp_path):
    with pytest.raises(ValueError, match="semantic_backend"):
        LBLConfig(semantic_backend=str(tmp_path) if bad == "EMPTY" else bad)


def test_unknown_backend_in_a_definition_is_one_line(tmp_path):
    from tests.helpers.common import error_line, run_cli

    path = tmp_path / "d.toml"
    path.write_text('[labelability]\nsemantic_backend = "word2vec"\n')
    line = error_line(run_cli("definition", "show", "--definition", str(path)))
    assert "[labelability] semantic_backend" in line and "'tfidf', 'minilm'" in line and "d.toml" in line
