import numpy as np
import pytest
from harness import code_matrix, top_hits

from clsr.data import DataError
from clsr.sae.data import build_training_data, random_spans, split_sentences, training_query_splits


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


def test_train_sae_cli_on_a_small_corpus_without_training_queries(tmp_path, capsys):
    import json

    from clsr.cli import main as clsr
    from clsr.sae.model import TopKSae

    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    topics = ["vitamin d and bone density", "sleep and memory", "coffee and the heart", "exercise and mood"]
    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(40):
            topic = topics[i % 4]
            f.write(json.dumps({"_id": f"d{i}", "title": topic.title(),
                                "text": f"A study {i} of {topic}. Results differ by age and sex. More work is needed."})
                    + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "does coffee harm the heart"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")

    clsr(["train-sae", "--dataset", str(folder), "--output", str(tmp_path / "sae"), "--n-latents", "64", "-k", "8",
          "--epochs", "2", "--spans-per-doc", "2", "--kl-weight", "0.1", "--kl-sparse-weight", "0.1",
          "--dtype", "fp32"])
    sae = TopKSae.load_from_disk(tmp_path / "sae")
    assert (sae.config.d_in, sae.config.n_latents, sae.config.k) == (384, 64, 8)
    assert sae.config.encoder["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    used = sae.config.training.data["datasets"][str(folder)]
    assert (used["passages"], used["sentences"], used["spans"]) == (40, 120, 80)  # 3 sentences, 2 spans each
    assert used["query_splits"] == [] and used["kl_queries"] == "spans (no training split)"
    assert sae.config.training.final_epoch["dead_fraction"] <= 1.0
    assert "epoch 2:" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="refusing to train on evaluation split"):
        clsr(["train-sae", "--dataset", str(folder), "--output", str(tmp_path / "bad"), "--train-split", "test"])


def test_train_sae_flags_are_trainconfigs_fields_declared_once():
    """Every TrainConfig field (but the warm-up and the device) is a flag with the field's own default, and the
    parsed flags give back exactly the config asked for."""
    import dataclasses

    from clsr.cli import load_command
    from clsr.options import build_parser, config_from_args
    from clsr.sae.config import TrainConfig

    parser = build_parser(load_command("train-sae"))
    defaults = parser.parse_args(["--dataset", "d", "--output", "o"])
    assert config_from_args(TrainConfig, defaults, device="cpu") == TrainConfig()
    given = parser.parse_args(["--dataset", "d", "--output", "o", "-k", "64", "--n-latents", "4096",
                               "--lr", "1e-3", "--multi-k", "16", "--multi-k", "32", "--max-steps", "7"])
    assert config_from_args(TrainConfig, given, device="cpu") == TrainConfig(
        k=64, n_latents=4096, lr=1e-3, multi_k=(16, 32), max_steps=7)
    flags = {action.dest for action in parser._actions}  # --device is the encoder options' (same field, one flag)
    assert {f.name for f in dataclasses.fields(TrainConfig)} - flags == {"warmup_steps"}
