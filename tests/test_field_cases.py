"""Inputs from the field (issue 14): each kind of file that other IR tools write, and what clsr does with it.

Every test writes its own tiny input; the numbers in comments are the field cases they stand for.
"""

import json
import logging
import math

import pytest

from clsr.cli import main as clsr
from clsr.data import DataError, load_corpus, load_qrels, load_topics
from clsr.evaluate import evaluate, read_run, trec_eval_order, write_run


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path




# -- 01, 02: evaluation never reports the impossible -------------------------------------------------------

def test_a_run_listing_a_document_twice_is_refused_naming_both_lines(tmp_path, cli_error):
    run = _write(tmp_path / "run.txt", "q1 Q0 dA 1 9.0 t\nq1 Q0 dB 2 8.0 t\nq1 Q0 dA 3 7.0 t\n")
    qrels = _write(tmp_path / "qrels.txt", "q1 0 dA 1\n")
    message = cli_error(["evaluate", "--run", str(run), "--qrels", str(qrels)])
    assert f"{run}:3: document 'dA' is listed twice for query 'q1' (first at line 1)" in message
    with pytest.raises(DataError, match="listed twice"):
        read_run(run)


def test_qrels_judging_a_pair_twice_with_different_grades_are_refused(tmp_path, cli_error):
    run = _write(tmp_path / "run.txt", "q1 Q0 dA 1 9.0 t\n")
    conflicting = _write(tmp_path / "qrels.txt", "q1 0 dA 0\nq1 0 dB 1\nq1 0 dA 2\n")
    message = cli_error(["evaluate", "--run", str(run), "--qrels", str(conflicting)])
    assert f"{conflicting}:3: query 'q1', document 'dA' judged 2 here and 0 at line 1" in message
    repeated = _write(tmp_path / "same.txt", "q1 0 dA 2\nq1 0 dA 2\n")
    assert load_qrels(repeated) == {"q1": {"dA": 2}}
    assert evaluate(read_run(run), load_qrels(repeated), ["ndcg@10"]) == {"ndcg@10": 1.0}


# -- 03: ids that cannot round-trip -------------------------------------------------------------------------

def test_document_ids_with_whitespace_are_refused_at_the_build(tmp_path, cli_error):
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": "sea"}\n{"_id": "Sea level", "text": "x"}\n')
    message = cli_error(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    assert f"{corpus}:2: document id 'Sea level' contains whitespace" in message
    assert not (tmp_path / "i").exists() and not list(tmp_path.glob(".i.building-*"))
    tsv = _write(tmp_path / "corpus.tsv", "d1\tsea\nd 2\tlevel\n")
    with pytest.raises(DataError, match=r"corpus.tsv:2: document id 'd 2' contains whitespace"):
        load_corpus(tsv)
    with pytest.raises(DataError, match="query id 'q 1' contains whitespace"):
        write_run({"q 1": [("d1", 1.0)]}, tmp_path / "run.trec")
    assert not (tmp_path / "run.trec").exists()


def test_tab_separated_qrels_are_split_on_tabs_only(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    _write(beir / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\tSea level\t1\nq1\td2\t2\n")
    assert load_qrels(beir) == {"q1": {"Sea level": 1, "d2": 2}}
    trec = _write(tmp_path / "qrels.trec", "q1 0 d7 1\nq2  Q0   d8\t3\n")  # whitespace-separated TREC
    assert load_qrels(trec) == {"q1": {"d7": 1}, "q2": {"d8": 3}}


# -- 04, 06, 07: readers that neither lose nor invent queries -----------------------------------------------

def test_a_byte_order_mark_changes_nothing(tmp_path, bm25_index):
    plain = _write(tmp_path / "plain.tsv", "1\twind turbines\n2\tsolar panels\n")
    bom = _write(tmp_path / "bom.tsv", "\ufeff1\twind turbines\n2\tsolar panels\n")
    assert load_topics(bom) == load_topics(plain) == {"1": "wind turbines", "2": "solar panels"}
    for name in ("plain", "bom"):
        clsr(["search", "--index", str(bm25_index), "--topics", str(tmp_path / f"{name}.tsv"),
              "--output", str(tmp_path / f"{name}.trec")])
    assert (tmp_path / "bom.trec").read_text() == (tmp_path / "plain.trec").read_text() != ""
    jsonl = _write(tmp_path / "q.jsonl", '\ufeff{"_id": "1", "text": "wind"}\n')
    assert load_topics(jsonl) == {"1": "wind"}
    qrels = _write(tmp_path / "qrels.tsv", "\ufeffquery-id\tcorpus-id\tscore\n1\td1\t1\n")
    assert load_qrels(qrels) == {"1": {"d1": 1}}


def test_a_topics_record_without_text_is_refused_with_file_and_line(tmp_path):
    topics = _write(tmp_path / "q.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2", "query": "b"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: query record has no 'text' field \(keys: _id, query\)"):
        load_topics(topics)


def test_blank_queries_are_reported_by_id_and_get_no_hits(tmp_path, bm25_index, caplog):
    topics = _write(tmp_path / "q.jsonl", '{"_id": "1", "text": ""}\n{"_id": "3", "text": "   "}\n'
                                          '{"_id": "5", "text": "solar panels"}\n')
    with caplog.at_level(logging.WARNING):
        assert load_topics(topics) == {"1": "", "3": "   ", "5": "solar panels"}
    assert "2 blank queries get no hits: 1, 3" in caplog.text
    clsr(["search", "--index", str(bm25_index), "--topics", str(topics), "--output", str(tmp_path / "run.trec")])
    assert set(read_run(tmp_path / "run.trec")) == {"5"}


def test_a_repeated_query_id_is_refused_naming_both_lines(tmp_path):
    topics = _write(tmp_path / "q.tsv", "7\tfirst\n8\tsecond\n7\tthird\n")
    with pytest.raises(DataError, match=r"q.tsv:3: duplicate query id '7' \(first at line 1\)"):
        load_topics(topics)
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:3: duplicate document id 'a' \(first at line 1\)"):
        load_corpus(corpus)


# -- 12 (step 8's bad input): encodings, empty corpora ------------------------------------------------------

def test_bytes_that_are_not_utf8_name_the_file_line_and_column(tmp_path, cli_error):
    corpus = _write(tmp_path / "c.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "caf\xe9"}\n')
    message = cli_error(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    assert f"{corpus}:2: not UTF-8 (byte 0xe9 at column 26)" in message


def test_an_empty_corpus_is_an_error(tmp_path, cli_error):
    corpus = _write(tmp_path / "c.jsonl", "\n\n")
    assert "c.jsonl: no documents" in cli_error(["index", "--kind", "bm25", "--corpus", str(corpus),
                                              "--index", str(tmp_path / "i")])
    assert not (tmp_path / "i").exists()


# -- 09, 10, 11: encoding input guards ----------------------------------------------------------------------

def test_max_length_over_the_model_positions_is_refused_before_any_work(tmp_path, cli_error):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n')
    message = cli_error(["index", "--kind", "dense", "--corpus", str(corpus), "--index", str(tmp_path / "i"),
                      "--max-length", "1024"])
    assert message.endswith("--max-length 1024 exceeds the 512 positions of sentence-transformers/all-MiniLM-L6-v2; "
                            "use at most 512")


def test_a_lone_surrogate_becomes_a_replacement_character_for_every_kind(tmp_path, caplog):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "text": "smile \\ud83d here"}\n'
                                          '{"_id": "b", "text": "pair \\ud83d\\ude00 ok"}\n')
    with caplog.at_level(logging.WARNING):
        documents = load_corpus(corpus)
    assert [d.text for d in documents] == ["smile \ufffd here", "pair \U0001F600 ok"]
    assert "1 passages hold lone surrogate escapes" in caplog.text and "first at line 1" in caplog.text
    documents[0].text.encode("utf-8")  # what the tokenizer and Anserini's JSON writer need


def test_huge_passages_are_cut_before_tokenising(caplog):
    from clsr.encode.dense import CHARS_PER_TOKEN_BOUND, DenseEncoder, cut_texts, encoder_config

    encoder = DenseEncoder(encoder_config("minilm"), dtype="fp32")
    normal = "Offshore wind turbines generate electricity from strong sea breezes. " * 60
    huge = normal + "x" * 3_000_000
    limit = 256 * CHARS_PER_TOKEN_BOUND
    assert cut_texts([huge, normal], 256) == ([huge[:limit], normal], 1)
    with caplog.at_level(logging.WARNING):
        vectors = encoder.encode([huge, normal])
    assert "1 of 2 texts are longer than 25600 characters and were cut" in caplog.text
    # Both are truncated to their first 256 tokens, which the cut leaves intact.
    assert float(vectors[0] @ vectors[1]) > 0.9999


# -- 08: small corpora --------------------------------------------------------------------------------------

def test_a_one_document_concept_index_finds_its_passage(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "p1", "title": "Wind farms", "text": "Offshore wind turbines '
                                          'generate electricity from strong sea breezes along the coast."}\n')
    topics = _write(tmp_path / "q.tsv", "q1\toffshore wind turbines electricity\n")
    clsr(["index", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--dtype", "fp32"])
    clsr(["search", "--index", str(tmp_path / "i"), "--topics", str(topics), "--output", str(tmp_path / "r.trec"),
          "--dtype", "fp32"])
    (hit,) = read_run(tmp_path / "r.trec")["q1"]
    assert hit[0] == "p1" and hit[1] > 0
    from clsr.interpret.explain import explain
    from clsr.search import ClsrSearcher

    explanation = explain(ClsrSearcher(tmp_path / "i", dtype="fp32"), "offshore wind turbines electricity", "p1")
    assert explanation["rank"] == 1 and explanation["score"] == hit[1] == \
        sum(c["contribution"] for c in explanation["shared"])


# -- 13: one rule for ties ----------------------------------------------------------------------------------

TIED_CORPUS = "".join(json.dumps({"_id": f"d0{i}", "title": "", "text": text}) + "\n" for i, text in enumerate([
    "Wind turbines convert moving air into electricity.",
    "Solar panels convert sunlight into electricity.",
    "Hydroelectric dams store water behind concrete walls.",
    "Solar panels convert sunlight into electricity.",
    "Solar panels convert sunlight into electricity.",
    "Batteries store electricity for use at night."], 1))


def test_ties_are_broken_one_way_in_search_explain_evaluate_and_fuse(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", TIED_CORPUS)
    topics = _write(tmp_path / "q.tsv", "q1\tsolar panels electricity\n")
    qrels = _write(tmp_path / "qrels.trec", "q1 0 d02 1\n")
    runs = {}
    for kind in ("concepts", "bm25"):
        clsr(["index", "--kind", kind, "--corpus", str(corpus), "--index", str(tmp_path / kind), "--dtype", "fp32",
              "--no-describe"]
             if kind == "concepts" else ["index", "--kind", kind, "--corpus", str(corpus),
                                         "--index", str(tmp_path / kind)])
        clsr(["search", "--index", str(tmp_path / kind), "--topics", str(topics),
              "--output", str(tmp_path / f"{kind}.trec")] + (["--dtype", "fp32"] if kind == "concepts" else []))
        runs[kind] = read_run(tmp_path / f"{kind}.trec")
        assert runs[kind]["q1"] == trec_eval_order(runs[kind]["q1"])
    # The three identical passages tie exactly in the concept run and are listed as trec_eval ranks them,
    # docid descending. (Anserini's BM25 searcher breaks ties itself, docid ascending, by lowering scores in
    # steps of 1e-6, so its run holds no exact tie.)
    assert [d for d, _ in runs["concepts"]["q1"][:3]] == ["d05", "d04", "d02"]
    assert [d for d, _ in runs["bm25"]["q1"][:3]] == ["d02", "d04", "d05"]
    from clsr.interpret.explain import explain
    from clsr.search import ClsrSearcher

    assert explain(ClsrSearcher(tmp_path / "concepts", dtype="fp32"), "solar panels electricity", "d02")["rank"] == 3
    assert evaluate(runs["concepts"], load_qrels(qrels), ["mrr@10"]) == {"mrr@10": pytest.approx(1 / 3)}
    clsr(["fuse", "--runs", str(tmp_path / "concepts.trec"), str(tmp_path / "bm25.trec"),
          "--output", str(tmp_path / "rrf.trec")])
    assert _fused_scores(read_run(tmp_path / "rrf.trec")) == _pyserini_fusion(
        [tmp_path / "concepts.trec", tmp_path / "bm25.trec"], "rrf")
    # d02 and d05 tie in RRF (1/61 + 1/63 each, from opposite ends of the two runs); d05 ranks first.
    assert [d for d, _ in read_run(tmp_path / "rrf.trec")["q1"][:3]] == ["d05", "d02", "d04"]
    assert evaluate(read_run(tmp_path / "rrf.trec"), load_qrels(qrels), ["mrr@10"]) == {"mrr@10": 0.5}


def _fused_scores(run) -> dict:
    return {qid: {docid: round(score, 6) for docid, score in hits} for qid, hits in run.items()}


def _pyserini_fusion(paths, method: str, alpha: float = 0.5) -> dict:
    """{qid: {docid: score}} from python -m pyserini.fusion on the same run files, to 6 decimals."""
    from pyserini.fusion import interpolation, reciprocal_rank_fusion
    from pyserini.trectools import TrecRun

    runs = [TrecRun(str(path)) for path in paths]
    fused = (reciprocal_rank_fusion(runs, rrf_k=60, depth=1000, k=1000) if method == "rrf"
             else interpolation(runs, alpha=alpha, depth=1000, k=1000))
    out: dict = {}
    for topic, docid, score in fused.run_data[["topic", "docid", "score"]].itertuples(index=False):
        out.setdefault(str(topic), {})[str(docid)] = round(float(score), 6)
    return out


@pytest.mark.parametrize("method", ["rrf", "interpolation"])
def test_fusion_equals_pyserini_fusion_on_runs_with_ties(tmp_path, method):
    # Ranks as written (pyserini.fusion fuses the rank column), ties across and within runs.
    first = _write(tmp_path / "a.trec", "1 Q0 d1 1 3.0 a\n1 Q0 d2 2 3.0 a\n1 Q0 d3 3 2.0 a\n"
                                         "2 Q0 d9 1 1.5 a\n2 Q0 d1 2 1.0 a\n")
    second = _write(tmp_path / "b.trec", "1 Q0 d3 1 0.9 b\n1 Q0 d4 2 0.9 b\n1 Q0 d1 3 0.1 b\n"
                                          "3 Q0 d5 1 7.0 b\n")
    options = ["--normalization", "none"] if method == "interpolation" else []
    clsr(["fuse", "--method", method, "--runs", str(first), str(second), "--output", str(tmp_path / "f.trec"),
          *options])
    ours = read_run(tmp_path / "f.trec")
    assert _fused_scores(ours) == _pyserini_fusion([first, second], method)
    for hits in ours.values():
        assert hits == trec_eval_order(hits)


# -- 05: the stock-Pyserini route keeps every id ------------------------------------------------------------

@pytest.mark.slow
def test_stock_pyserini_keeps_zero_padded_and_alphanumeric_query_ids(tmp_path, slice_concept_index, scifact_slice,
                                                                      cli_error, stock_pyserini_search):
    texts = list(scifact_slice.topics.values())[:3]
    topics = _write(tmp_path / "q.tsv", "".join(f"{qid}\t{text}\n" for qid, text in zip(["001", "042", "q7"], texts)))
    clsr(["search", "--index", str(slice_concept_index), "--topics", str(topics), "--hits", "20", "--dtype", "fp32",
          "--output", str(tmp_path / "clsr.trec")])
    assert "would not come back unchanged" in cli_error(
        ["encode-queries", "--index", str(slice_concept_index), "--topics", str(topics), "--output",
         str(tmp_path / "queries.jsonl"), "--topics-output", str(tmp_path / "topics.tsv")])
    clsr(["encode-queries", "--index", str(slice_concept_index), "--topics", str(topics), "--dtype", "fp32",
          "--output", str(tmp_path / "queries.jsonl"), "--topics-output", str(tmp_path / "topics.json")])
    stock_pyserini_search(slice_concept_index, tmp_path / "topics.json", tmp_path / "queries.jsonl",
                          tmp_path / "stock.trec", hits=20)
    ours, theirs = read_run(tmp_path / "clsr.trec"), read_run(tmp_path / "stock.trec")
    assert set(ours) == set(theirs) == {"001", "042", "q7"}
    assert {q: sorted(h) for q, h in ours.items()} == {q: sorted(h) for q, h in theirs.items()}


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    directory = tmp_path_factory.mktemp("field-bm25")
    corpus = _write(directory / "corpus.jsonl", TIED_CORPUS)
    clsr(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(directory / "index")])
    return directory / "index"


def test_metrics_never_exceed_one(tmp_path):
    run = {"q": [("a", 2.0), ("b", 1.0)]}
    qrels = {"q": {"a": 3, "b": 1, "c": 2}}
    scores = evaluate(run, qrels, ["ndcg@10", "mrr@10", "recall@100", "precision@1"])
    assert all(0.0 <= value <= 1.0 and math.isfinite(value) for value in scores.values())
