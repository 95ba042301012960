import json
import logging

import pytest

from clsr.data import DataError, data_root, document_text, iter_corpus, load_corpus, load_qrels, load_topics, resolve


def write_beir(folder, docs, queries, qrels_lines, split="test"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels_lines))
    return folder


def test_scifact_from_the_shared_folder(shared_data):
    docs = load_corpus("scifact")
    assert len(docs) == 5183
    assert docs[0].id == "4983"
    assert docs[0].text.startswith("Microstructural development of human newborn cerebral white matter assessed "
                                   "in vivo by diffusion tensor magnetic resonance imaging. Alterations of")
    topics = load_topics("scifact", "test")
    assert len(topics) == 300 and topics["1"] == "0-dimensional biomaterials show inductive properties."
    qrels = load_qrels("scifact", "test")
    assert len(qrels) == 300 and sum(map(len, qrels.values())) == 339
    assert qrels["1"] == {"31715818": 1}
    assert len(load_topics("scifact", "train")) == 809


def test_nfcorpus_splits_and_graded_qrels(shared_data):
    test = load_qrels(shared_data / "nfcorpus", "test")
    assert len(test) == 323 and sum(map(len, test.values())) == 12334
    assert {g for judged in test.values() for g in judged.values()} == {1, 2}
    assert len(load_topics(shared_data / "nfcorpus", "dev")) == 324


def test_msmarco_dl19_qrels_are_graded(shared_data):
    qrels = load_qrels(shared_data / "msmarco-passage" / "qrels" / "dl19.tsv")
    assert len(qrels) == 43
    assert {g for judged in qrels.values() for g in judged.values()} == {0, 1, 2, 3}


def test_clsr_data_overrides_the_collection_location(tmp_path, monkeypatch):
    write_beir(tmp_path / "mini", [{"_id": "a", "title": "T", "text": "x"}], [{"_id": "q", "text": "y"}],
               ["q\ta\t1\n"])
    monkeypatch.setenv("CLSR_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert resolve("mini") == tmp_path / "mini"
    assert [d.text for d in iter_corpus("mini")] == ["T x"]


def test_document_text_is_title_space_text():
    assert document_text("Title", "Body") == "Title Body"
    assert document_text("", "Body") == "Body"
    assert document_text(None, None) == ""


def test_malformed_json_names_file_and_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: malformed JSON"):
        load_corpus(corpus)


def test_missing_id_is_an_error(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "ok"}\n\n{"title": "no id", "text": "x"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: record has no '_id'"):
        load_corpus(corpus)


def test_duplicate_document_ids_are_an_error(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n')
    with pytest.raises(DataError, match="duplicate document id '1'"):
        load_corpus(corpus)


def test_empty_text_is_allowed(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "title": "", "text": ""}\n{"id": "2", "contents": "pyserini style"}\n')
    assert [(d.id, d.text) for d in load_corpus(corpus)] == [("1", ""), ("2", "pyserini style")]


def test_qrels_ids_missing_from_queries_are_reported(tmp_path, caplog):
    folder = write_beir(tmp_path / "c", [{"_id": "d", "text": "x"}],
                        [{"_id": "q1", "text": "first"}, {"_id": "q9", "text": "unjudged"}],
                        ["q1\td\t1\n", "q2\td\t1\n"])
    with caplog.at_level(logging.WARNING):
        topics = load_topics(folder, "test")
    assert topics == {"q1": "first"}
    assert "1 query ids" in caplog.text and "q2" in caplog.text


def test_unknown_split_lists_the_available_ones(tmp_path):
    folder = write_beir(tmp_path / "c", [], [], [], split="dev")
    with pytest.raises(DataError, match="no qrels for split 'test'.*available splits: dev"):
        load_qrels(folder, "test")


def test_msmarco_tsv_and_trec_qrels(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tsecond\tpassage with tab\n")
    (tmp_path / "queries.tsv").write_text("5\twhat is it\n")
    (tmp_path / "qrels.txt").write_text("5 0 1 2\n5 0 0 0\n")
    assert [(d.id, d.text) for d in load_corpus(tmp_path / "collection.tsv")] == [
        ("0", "first passage"), ("1", "second\tpassage with tab")]
    assert load_topics(tmp_path / "queries.tsv") == {"5": "what is it"}
    assert load_qrels(tmp_path / "qrels.txt") == {"5": {"1": 2, "0": 0}}


def test_bad_tsv_line_is_named(tmp_path):
    (tmp_path / "queries.tsv").write_text("1\tok\nno-tab-here\n")
    with pytest.raises(DataError, match=r"queries\.tsv:2: expected 'id<TAB>text'"):
        load_topics(tmp_path / "queries.tsv")


def test_unknown_source_is_a_clear_error():
    with pytest.raises(DataError, match="no such file, folder or collection: 'nope'"):
        resolve("nope")


def test_offline_ir_datasets_suggests_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    try:
        load_topics("beir/scifact/test")
    except DataError as e:
        assert "Offline, pass a local BEIR folder" in str(e)
    else:  # pragma: no cover - only where the network is reachable
        pytest.skip("ir_datasets could download beir/scifact; the offline path is not exercised here")


def test_an_ir_datasets_collection_with_a_split_reads_that_split():
    from clsr.data import _ir_datasets

    assert _ir_datasets("beir/scifact", "test").id == "beir/scifact/test"
    assert _ir_datasets("beir/scifact/test", "test").id == "beir/scifact/test"
    with pytest.raises(DataError, match="neither a local path nor a known ir_datasets id"):
        _ir_datasets("no/such/dataset")
