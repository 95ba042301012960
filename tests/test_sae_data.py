import numpy as np
import pytest

from clsr.data import DataError
from clsr.experiment import code_matrix, top_hits
from clsr.sae_data import build_training_data, random_spans, split_sentences, training_query_splits


def test_sentences_split_on_terminal_punctuation_and_drop_fragments():
    text = "Vitamin D matters for bones. It is made in skin (mostly). 3 trials agree on this point! Ok."
    assert split_sentences(text) == ["Vitamin D matters for bones.", "It is made in skin (mostly).",
                                     "3 trials agree on this point!"]  # "Ok." is a fragment


def test_spans_are_4_to_20_consecutive_words():
    text = " ".join(f"w{i}" for i in range(50))
    spans = random_spans(text, np.random.default_rng(0), 100)
    assert len(spans) == 100
    for span in spans:
        words = span.split()
        assert 4 <= len(words) <= 20
        first = int(words[0][1:])
        assert words == [f"w{i}" for i in range(first, first + len(words))]
    assert random_spans("too short", np.random.default_rng(0), 3) == []


def test_default_training_splits_leave_out_test_and_dev(shared_data):
    assert training_query_splits(shared_data / "nfcorpus") == ["train"]
    assert training_query_splits(shared_data / "scifact") == ["train"]


def test_training_on_a_test_split_is_refused(shared_data):
    with pytest.raises(DataError, match="refusing to train on evaluation split"):
        build_training_data(["scifact"], encoder=None, query_splits={"scifact": ["train", "test"]})


def test_top_hits_and_code_matrix():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    assert top_hits(scores, ["a", "b"], ["d0", "d1", "d2"], 2) == {
        "a": [("d1", 0.9), ("d2", 0.5)], "b": [("d0", 0.3), ("d1", 0.2)]}
    codes = code_matrix(np.array([[2.0, 1.0]], np.float32), np.array([[3, 0]]), 5).toarray()
    np.testing.assert_array_equal(codes, [[1.0, 0, 0, 2.0, 0]])
