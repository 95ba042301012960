"""Inputs from the field, second round (issue 25): field cases 14-22 and other variants of each kind.

Every test writes its own inputs; the comments name the field cases they stand for.
"""

import bz2
import gzip
import http.client
import json
import logging
import lzma
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clsr.cli import main as clsr
from clsr.data import DataError, load_corpus, load_qrels, load_topics, text_lines
from clsr.evaluate import evaluate, read_run, score_texts, trec_eval_order, write_run

PASSAGES = {
    "d1": ("Wind power", "Wind turbines convert moving air into electricity."),
    "d2": ("Solar power", "Solar panels convert sunlight into electricity."),
    "d3": ("Dams", "Hydroelectric dams store water behind concrete walls."),
    "d4": ("Storage", "Batteries store electricity for use at night."),
}
CORPUS = "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in PASSAGES.items())
TOPICS = "q1\tsolar panels sunlight\nq2\thydroelectric dams water\nq3\tbatteries at night\n"
QRELS = "q1 0 d2 1\nq2 0 d3 2\nq3 0 d4 1\n"
COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _run_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    directory = tmp_path_factory.mktemp("field2-bm25")
    clsr(["index", "--kind", "bm25", "--corpus", str(_write(directory / "corpus.jsonl", CORPUS)),
          "--index", str(directory / "index")])
    return directory / "index"


@pytest.fixture(scope="module")
def concept_index(tmp_path_factory):
    directory = tmp_path_factory.mktemp("field2-concepts")
    clsr(["index", "--corpus", str(_write(directory / "corpus.jsonl", CORPUS)), "--index", str(directory / "index"),
          "--dtype", "fp32", "--no-describe"])
    return directory / "index"


# -- 14: compressed files, every kind, by their bytes ---------------------------------------------------------

def test_compressed_files_of_every_kind_read_as_the_plain_ones(tmp_path):
    plain = {"corpus.jsonl": CORPUS, "queries.tsv": TOPICS, "qrels.trec": QRELS,
             "run.trec": "q1 Q0 d2 1 3.5 t\nq1 Q0 d1 2 1.25 t\n"}
    readers = {"corpus.jsonl": load_corpus, "queries.tsv": load_topics, "qrels.trec": load_qrels,
               "run.trec": read_run}
    for name, text in plain.items():
        expected = readers[name](_write(tmp_path / name, text))
        for suffix, compress in COMPRESSORS.items():
            assert readers[name](_write(tmp_path / f"c{suffix}" / f"{name}{suffix}", compress(text.encode()))) \
                == expected, (name, suffix)
    assert [d.id for d in load_corpus(tmp_path / "c.gz" / "corpus.jsonl.gz")] == ["d1", "d2", "d3", "d4"]
    assert load_topics(tmp_path / "c.bz2" / "queries.tsv.bz2")["q2"] == "hydroelectric dams water"
    # Known by the bytes, not the name: gzip data under a plain name, plain text under a .gz name.
    assert load_qrels(_write(tmp_path / "gzip-inside.trec", gzip.compress(QRELS.encode()))) == {
        "q1": {"d2": 1}, "q2": {"d3": 2}, "q3": {"d4": 1}}
    assert load_topics(_write(tmp_path / "plain.tsv.gz", TOPICS)) == load_topics(tmp_path / "queries.tsv")


def test_a_gzip_corpus_and_a_beir_folder_of_compressed_files_index_search_and_evaluate(tmp_path, capsys):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    queries = "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in
                      (line.split("\t") for line in TOPICS.splitlines()))
    qrels = "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t2\nq3\td4\t1\n"
    for name, text in (("corpus.jsonl", CORPUS), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)):
        _write(plain / name, text)
        _write(packed / f"{name}.gz", gzip.compress(text.encode()))
    clsr(["index", "--kind", "bm25", "--corpus", str(packed / "corpus.jsonl.gz"), "--index", str(tmp_path / "i")])
    assert "built bm25 index of 4 documents" in capsys.readouterr().out
    for folder in (plain, packed):
        clsr(["index", "--kind", "bm25", "--corpus", str(folder), "--index", str(tmp_path / f"i-{folder.name}")])
        clsr(["search", "--index", str(tmp_path / f"i-{folder.name}"), "--topics", str(folder),
              "--output", str(tmp_path / f"{folder.name}.trec")])
    assert _run_text(tmp_path / "packed.trec") == _run_text(tmp_path / "plain.trec") != ""
    assert [d for d, _ in read_run(tmp_path / "packed.trec")["q1"]][:1] == ["d2"]
    capsys.readouterr()
    clsr(["evaluate", "--run", str(tmp_path / "packed.trec"), "--qrels", str(packed), "--json"])
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == 1.0
    assert load_qrels(packed, "test") == load_qrels(plain, "test") == {"q1": {"d2": 1}, "q2": {"d3": 2},
                                                                      "q3": {"d4": 1}}
    with pytest.raises(DataError, match=r"no qrels for split 'dev' .*available splits: test"):
        load_qrels(packed, "dev")


def test_compressed_text_that_is_not_utf8_gets_no_iconv_advice(tmp_path, cli_error):
    latin1 = '{"_id": "a", "text": "x"}\n{"_id": "b", "text": "caf\xe9"}\n'.encode("latin-1")
    packed = _write(tmp_path / "c.jsonl.gz", gzip.compress(latin1))
    message = cli_error(["index", "--kind", "bm25", "--corpus", str(packed), "--index", str(tmp_path / "i")])
    assert f"{packed}:2: not UTF-8 (byte 0xe9 at column 26) in the gzip-decompressed text" in message
    assert "iconv" not in message
    plain = _write(tmp_path / "c.jsonl", latin1)  # the plain file still gets the advice
    assert "iconv -f latin1" in cli_error(["index", "--kind", "bm25", "--corpus", str(plain),
                                           "--index", str(tmp_path / "i")])


def test_a_codec_clsr_cannot_read_and_corrupt_data_are_named_in_one_line(tmp_path, cli_error):
    lz4 = _write(tmp_path / "q.tsv.lz4", b"\x04\x22\x4d\x18" + b"\x00" * 20)
    message = cli_error(["search", "--index", str(tmp_path), "--topics", str(lz4), "--output", str(tmp_path / "r")])
    assert f"{lz4}: compressed with lz4, which clsr cannot read" in message
    zstd = _write(tmp_path / "c.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"c\.jsonl\.zst: compressed with zstd, which needs the zstandard package"):
            load_corpus(zstd)
    truncated = _write(tmp_path / "qrels.trec.gz", gzip.compress((QRELS * 200).encode())[:-30])
    with pytest.raises(DataError, match=r"qrels\.trec\.gz:\d+: corrupt gzip data"):
        load_qrels(truncated)
    bzip2_like = _write(tmp_path / "q.tsv", "BZh9\tnot bzip2 at all\n")  # "BZh" alone is no bzip2 header
    assert load_topics(bzip2_like) == {"BZh9": "not bzip2 at all"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=["Cs"]), max_size=80), suffix=st.sampled_from(list(COMPRESSORS)))
def test_any_text_reads_the_same_compressed(tmp_path, text, suffix):
    plain = list(text_lines(_write(tmp_path / "plain.txt", text)))
    assert list(text_lines(_write(tmp_path / f"packed{suffix}", COMPRESSORS[suffix](text.encode())))) == plain


# -- 15: a bare CR ends a line ----------------------------------------------------------------------------------

def test_cr_only_topics_are_three_queries_and_search_as_lf_ones(tmp_path, bm25_index, capsys):
    lf = _write(tmp_path / "lf.tsv", TOPICS)
    cr = _write(tmp_path / "cr.tsv", TOPICS.replace("\n", "\r"))
    crlf = _write(tmp_path / "crlf.tsv", TOPICS.replace("\n", "\r\n"))
    assert load_topics(cr) == load_topics(crlf) == load_topics(lf) == {
        "q1": "solar panels sunlight", "q2": "hydroelectric dams water", "q3": "batteries at night"}
    qrels = _write(tmp_path / "qrels.trec", QRELS)
    for topics in (lf, cr):
        clsr(["search", "--index", str(bm25_index), "--topics", str(topics),
              "--output", str(tmp_path / f"{topics.stem}.trec")])
    assert _run_text(tmp_path / "cr.trec") == _run_text(tmp_path / "lf.trec")
    capsys.readouterr()
    clsr(["evaluate", "--run", str(tmp_path / "cr.trec"), "--qrels", str(qrels), "--metrics", "ndcg@10", "--json"])
    assert json.loads(capsys.readouterr().out) == {"ndcg@10": 1.0}


def test_cr_only_qrels_runs_and_corpora_keep_their_records_and_line_numbers(tmp_path):
    assert load_qrels(_write(tmp_path / "q.trec", QRELS.replace("\n", "\r"))) == load_qrels(
        _write(tmp_path / "q-lf.trec", QRELS)) == {"q1": {"d2": 1}, "q2": {"d3": 2}, "q3": {"d4": 1}}
    run = "q1 Q0 d2 1 2.5 t\rq1 Q0 d1 2 0.5 t\r\nq2 Q0 d3 1 1.0 t\n"  # CR, CRLF and LF in one file
    assert read_run(_write(tmp_path / "r.trec", run)) == {"q1": [("d2", 2.5), ("d1", 0.5)], "q2": [("d3", 1.0)]}
    bad = _write(tmp_path / "bad.trec", "q1 Q0 d2 1 2.5 t\rq1 Q0 d1 2 0.5 t\rq1 Q0 d3 3\r")
    with pytest.raises(DataError, match=r"bad\.trec:3: expected 6 \(TREC\) or 3 \(MS MARCO\) columns"):
        read_run(bad)
    corpus = _write(tmp_path / "c.jsonl", CORPUS.replace("\n", "\r"))
    assert [(d.id, d.text) for d in load_corpus(corpus)] == [(d.id, d.text) for d in load_corpus(
        _write(tmp_path / "c-lf.jsonl", CORPUS))]
    duplicate = _write(tmp_path / "dup.tsv", "a\tx\r\rb\ty\ra\tz\r")  # the blank line counts, as in an editor
    with pytest.raises(DataError, match=r"dup\.tsv:4: duplicate query id 'a' \(first at line 1\)"):
        load_topics(duplicate)


# -- 16: runs keep the precision of their scores ----------------------------------------------------------------

def test_tiny_fused_scores_keep_their_ranking_and_equal_pyserini_fusion(tmp_path, capsys):
    first = _write(tmp_path / "monot5.trec", "q1 Q0 dA 1 3.2e-07 m\nq1 Q0 dB 2 2.9e-07 m\nq1 Q0 dC 3 1.1e-07 m\n"
                                             "q1 Q0 dD 4 4.0e-08 m\n")
    second = _write(tmp_path / "other.trec", "q1 Q0 dD 1 5.0e-07 o\nq1 Q0 dA 2 4.5e-07 o\nq1 Q0 dC 3 2.0e-08 o\n"
                                             "q1 Q0 dB 4 1.0e-08 o\n")
    qrels = _write(tmp_path / "qrels.txt", "q1 0 dA 1\n")
    clsr(["fuse", "--runs", str(first), str(second), "--method", "interpolation", "--alpha", "0.5",
          "--normalization", "none", "--output", str(tmp_path / "fused.trec")])
    fused = read_run(tmp_path / "fused.trec")["q1"]
    assert [d for d, _ in fused] == ["dA", "dD", "dB", "dC"]
    assert [s for _, s in fused] == pytest.approx([3.85e-07, 2.7e-07, 1.5e-07, 6.5e-08], rel=1e-12)
    capsys.readouterr()
    clsr(["evaluate", "--run", str(tmp_path / "fused.trec"), "--qrels", str(qrels), "--metrics", "mrr@10", "--json"])
    assert json.loads(capsys.readouterr().out) == {"mrr@10": 1.0}
    from pyserini.fusion import interpolation
    from pyserini.trectools import TrecRun

    theirs = interpolation([TrecRun(str(first)), TrecRun(str(second))], alpha=0.5, depth=1000, k=1000).run_data
    assert list(theirs["docid"]) == [d for d, _ in fused]
    assert list(theirs["score"]) == pytest.approx([s for _, s in fused], rel=1e-12)


def test_a_written_run_reads_back_in_the_ranking_held_in_memory(tmp_path):
    rng = np.random.default_rng(7)
    doubles = 10.0 ** rng.uniform(-12, 6, size=300)
    near = [1e-12, math.nextafter(1e-12, 1), 5e-7, math.nextafter(5e-7, 0), 1e6, math.nextafter(1e6, 0)]
    singles = np.float32(10.0) ** rng.uniform(-12, 6, size=300).astype(np.float32)
    tied = [0.1, 0.1, 0.2, 0.2, 0.2]
    run = {"doubles": [(f"d{i}", float(s)) for i, s in enumerate([*doubles, *near, -3.5e-9, 0.0])],
           "singles": [(f"d{i}", float(s)) for i, s in enumerate([*singles, np.float32(0.1), np.float32(2.0754)])],
           "ties": [(f"d{i}", s) for i, s in enumerate(tied)]}
    write_run(run, tmp_path / "run.trec")
    again = read_run(tmp_path / "run.trec")
    for qid, hits in run.items():
        assert [d for d, _ in again[qid]] == [d for d, _ in trec_eval_order(hits)], qid
    assert dict(again["doubles"]) == dict(run["doubles"])  # doubles come back exactly
    assert [d for d, _ in again["ties"]] == ["d4", "d3", "d2", "d1", "d0"]
    lines = _run_text(tmp_path / "run.trec").splitlines()
    assert any(line.startswith("singles Q0 d301 ") and line.endswith(" 2.0754 clsr") for line in lines)
    assert score_texts([1e-12, 3.85e-07, 1e6]) == ["1e-12", "3.85e-07", "1000000.0"]
    with pytest.raises(DataError, match="not a finite number"):
        write_run({"q": [("d", float("nan"))]}, tmp_path / "nan.trec")


def test_rrf_of_long_runs_reads_back_in_its_own_order(tmp_path):
    from clsr.fusion import reciprocal_rank_fusion

    first = {"q": [(f"d{i}", 1.0 / (i + 1)) for i in range(1000)]}
    second = {"q": [(f"d{999 - i}", 1.0 / (i + 1)) for i in range(1000)]}
    fused = reciprocal_rank_fusion([first, second], k=1000)
    write_run(fused, tmp_path / "rrf.trec")
    assert [d for d, _ in read_run(tmp_path / "rrf.trec")["q"]] == [d for d, _ in fused["q"]]
    assert evaluate(read_run(tmp_path / "rrf.trec"), {"q": {"d0": 1}}, ["mrr@10"]) == \
        evaluate(fused, {"q": {"d0": 1}}, ["mrr@10"])


# -- 17: JSON ids -----------------------------------------------------------------------------------------------

def test_integer_ids_are_their_decimal_text_and_evaluate(tmp_path, capsys):
    corpus = _write(tmp_path / "c.jsonl", "".join(json.dumps({"_id": int(i[1:]) + 31715817, "title": t, "text": x})
                                                  + "\n" for i, (t, x) in PASSAGES.items()))
    assert [d.id for d in load_corpus(corpus)] == ["31715818", "31715819", "31715820", "31715821"]
    topics = _write(tmp_path / "q.jsonl", '{"_id": 1, "text": "solar panels sunlight"}\n')
    assert load_topics(topics) == {"1": "solar panels sunlight"}
    clsr(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    clsr(["search", "--index", str(tmp_path / "i"), "--topics", str(topics), "--output", str(tmp_path / "r.trec")])
    qrels = _write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\n1\t31715819\t1\n")
    capsys.readouterr()
    clsr(["evaluate", "--run", str(tmp_path / "r.trec"), "--qrels", str(qrels), "--metrics", "ndcg@10", "--json"])
    assert json.loads(capsys.readouterr().out) == {"ndcg@10": 1.0}


@pytest.mark.parametrize("value, shown", [("31715818.0", "31715818.0 is a JSON float"),
                                          ("1e3", "1000.0 is a JSON float"), ("true", "true is a JSON boolean"),
                                          ("null", "null is JSON null"), ("[1]", r"\[1\] is a JSON array")])
def test_float_boolean_and_null_ids_are_refused_with_file_and_line(tmp_path, cli_error, value, shown):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": %s, "text": "y"}\n' % value)  # noqa: UP031 (literal JSON braces)
    message = cli_error(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    assert re.search(rf"{re.escape(str(corpus))}:2: document id {shown}, .* write ids as strings", message)
    pyserini = _write(tmp_path / "docs.jsonl", '{"id": %s, "contents": "y"}\n' % value)  # noqa: UP031 (literal JSON braces)
    with pytest.raises(DataError, match=r"docs\.jsonl:1: document id .* write ids as strings"):
        load_corpus(pyserini)
    topics = _write(tmp_path / "q.jsonl", '{"_id": "1", "text": "a"}\n\n{"_id": %s, "text": "b"}\n' % value)  # noqa: UP031 (literal JSON braces)
    with pytest.raises(DataError, match=rf"q\.jsonl:3: query id {shown}.*write ids as strings"):
        load_topics(topics)


# -- 18: NaN and numbers where text belongs ---------------------------------------------------------------------

def test_nan_null_and_numeric_text_fields_follow_one_rule(tmp_path, caplog):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "title": "Stem cells", "text": "grow"}\n'
                                          '{"_id": "b", "title": NaN, "text": "common variants"}\n'
                                          '{"_id": "c", "title": 2019, "text": "prion survey"}\n'
                                          '{"_id": "d", "title": null, "text": NaN}\n'
                                          '{"_id": "e", "title": 1.5, "text": "half"}\n')
    with caplog.at_level(logging.WARNING):
        documents = load_corpus(corpus)
    assert [(d.id, d.text) for d in documents] == [("a", "Stem cells grow"), ("b", "common variants"),
                                                   ("c", "2019 prion survey"), ("d", ""), ("e", "1.5 half")]
    assert "4 passages have a title or text that is NaN (read as empty) or a number" in caplog.text
    assert "first at line 2 (document 'b')" in caplog.text
    pyserini = _write(tmp_path / "docs.jsonl", '{"id": "a", "contents": NaN}\n{"id": "b", "contents": 7}\n')
    assert [(d.id, d.text) for d in load_corpus(pyserini)] == [("a", ""), ("b", "7")]
    clsr(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    topics = _write(tmp_path / "q.jsonl", '{"_id": "1", "text": "2019"}\n{"_id": "2", "text": NaN}\n')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        clsr(["search", "--index", str(tmp_path / "i"), "--topics", str(topics), "--output", str(tmp_path / "r.trec")])
    assert "1 blank queries get no hits: 2" in caplog.text
    assert [d for d, _ in read_run(tmp_path / "r.trec")["1"]] == ["c"] and "2" not in read_run(tmp_path / "r.trec")


@pytest.mark.parametrize("value", ["true", "Infinity", "[1, 2]", '{"en": "x"}'])
def test_other_non_text_values_are_refused_with_file_line_and_document(tmp_path, cli_error, value):
    corpus = _write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "title": %s, "text": "y"}\n' % value)  # noqa: UP031 (literal JSON braces)
    message = cli_error(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    assert f"{corpus}:2: document 'b': title is " in message and "not a string" in message


# -- 19: queries of more than 1,024 clauses ---------------------------------------------------------------------

LONG_WORDS = [f"term{i:04d}" for i in range(1500)]


def test_a_bm25_query_over_1024_terms_is_searched_with_the_others(tmp_path):
    long_passage = json.dumps({"_id": "long", "text": " ".join(LONG_WORDS[::3])}) + "\n"
    corpus = _write(tmp_path / "c.jsonl", CORPUS + long_passage)
    topics = _write(tmp_path / "q.tsv", f"short\tsolar panels\nlong\t{' '.join(LONG_WORDS)}\n")
    clsr(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
    for threads in ("1", "2"):
        clsr(["search", "--index", str(tmp_path / "i"), "--topics", str(topics), "--threads", threads,
              "--output", str(tmp_path / f"r{threads}.trec")])
        run = read_run(tmp_path / f"r{threads}.trec")
        assert [d for d, _ in run["long"]] == ["long"] and [d for d, _ in run["short"]][:1] == ["d2"]


def test_a_query_lucene_still_refuses_is_named_and_the_batch_kept(tmp_path, bm25_index, caplog):
    from clsr.jvm import MAX_CLAUSES, java_class
    from clsr.search import Bm25Searcher

    searcher = Bm25Searcher(bm25_index)
    index_searcher = java_class("org.apache.lucene.search.IndexSearcher")
    assert index_searcher.getMaxClauseCount() == MAX_CLAUSES
    index_searcher.setMaxClauseCount(4)
    try:
        with caplog.at_level(logging.WARNING):
            run = searcher.batch_search({"wide": "wind solar dams batteries electricity night", "narrow": "dams"},
                                        k=10, threads=2)
    finally:
        index_searcher.setMaxClauseCount(MAX_CLAUSES)
    assert run["wide"] == [] and [h.docid for h in run["narrow"]] == ["d3"]
    assert "query 'wide' could not be searched and gets no hits" in caplog.text
    assert "TooManyClauses" in caplog.text or "too many" in caplog.text.lower()


def test_impact_queries_over_1024_concepts_and_a_refused_concept_query(concept_index, caplog):
    from jnius import autoclass

    from clsr.jvm import MAX_CLAUSES, java_class
    from clsr.search import ClsrSearcher, ranked

    searcher = ClsrSearcher(concept_index, dtype="fp32")
    vector = searcher.searchable(searcher.query_encoder.encode("solar panels sunlight"))
    java_map, java_int = autoclass("java.util.HashMap")(), autoclass("java.lang.Integer")
    for term, weight in vector.items():
        java_map.put(term, java_int(int(weight)))
    for i in range(1500):  # terms no passage holds still count as clauses
        java_map.put(f"absent{i}", java_int(1))
    wide = ranked(searcher.impact_searcher.object.search(java_map, 4))
    assert wide == searcher.search_vector(vector, 4) and wide[0].docid == "d2"

    # Two queries of different sizes, and a limit between them: the larger is refused, the smaller searched.
    texts = {"a": "dams", "b": "solar panels convert sunlight into electricity on wind farms at night"}
    sizes = {qid: len(searcher.searchable(searcher.query_encoder.encode(t))) for qid, t in texts.items()}
    small, large = sorted(texts, key=sizes.get)
    assert sizes[small] < sizes[large]
    expected = searcher.batch_search(texts, k=4)
    assert expected[small] and expected[large]
    index_searcher = java_class("org.apache.lucene.search.IndexSearcher")
    index_searcher.setMaxClauseCount(sizes[small])
    try:
        with caplog.at_level(logging.WARNING):
            one_by_one = searcher.batch_search(texts, k=4)
            batched = searcher.batch_search(texts, k=4, threads=2, batch_size=2)
    finally:
        index_searcher.setMaxClauseCount(MAX_CLAUSES)
    assert one_by_one == batched == {small: expected[small], large: []}
    assert f"query {large!r} could not be searched and gets no hits" in caplog.text


# -- 20: non-ASCII paths under the POSIX locale -----------------------------------------------------------------

def _posix_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python running `code` as `env -u LANG LC_ALL=C python -c CODE` would (containers often run so)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LANGUAGE") and not k.startswith("LC_")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**env, "LC_ALL": "C"}, capture_output=True,
                          text=True, timeout=300)


def test_a_non_ascii_index_path_works_under_the_posix_locale(tmp_path):
    _write(tmp_path / "c.jsonl", CORPUS)
    _write(tmp_path / "q.tsv", TOPICS)
    done = _posix_python(
        "import locale, os, sys\n"
        "from clsr.cli import main\n"
        "before = locale.setlocale(locale.LC_ALL)\n"
        "main(['index', '--kind', 'bm25', '--corpus', 'c.jsonl', '--index', 'índice'])\n"
        "main(['search', '--index', 'índice', '--topics', 'q.tsv', '--output', 'rún/run.trec'])\n"
        "from jnius import autoclass\n"
        "print(autoclass('java.lang.System').getProperty('sun.jnu.encoding'), os.environ['LC_ALL'],\n"
        "      locale.setlocale(locale.LC_ALL) == before, sys.getfilesystemencoding())\n", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "UTF-8 C True utf-8"
    assert (tmp_path / "índice" / "clsr-index.json").exists()
    assert [d for d, _ in read_run(tmp_path / "rún" / "run.trec")["q2"]][:1] == ["d3"]


def test_without_a_utf8_locale_a_non_ascii_path_is_refused_in_one_line(tmp_path):
    _write(tmp_path / "c.jsonl", CORPUS)
    done = _posix_python(
        "import clsr.jvm\n"
        "clsr.jvm._UTF8_LOCALES = ('xx_XX.NO-SUCH-LOCALE',)  # a system with no UTF-8 locale at all\n"
        "from clsr.cli import main\n"
        "main(['index', '--kind', 'bm25', '--corpus', 'c.jsonl', '--index', 'índice'])\n", tmp_path)
    error = [line for line in done.stderr.splitlines() if line.startswith("clsr ")]
    assert done.returncode == 1 and len(error) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert error[0].startswith("clsr index: error: ") and "Java cannot use this path" in error[0]
    assert "LC_ALL=C.UTF-8" in error[0] and not (tmp_path / "índice").exists()


# -- 21: clsr serve answers only its own names ------------------------------------------------------------------

def test_host_names_are_parsed_in_every_form():
    from clsr.interpret.serve import HostCheck, host_name, served_names

    assert served_names() == ["localhost", "127.0.0.1", "::1"]
    assert served_names("0.0.0.0", ["Box.LAN", "[fe80::1]"]) == ["localhost", "127.0.0.1", "::1", "box.lan", "fe80::1"]
    assert [host_name(h) for h in ("LocalHost:8080", "[::1]:80", "[::1]", "", "a:b", "[::1", "x:")] == [
        "localhost", "::1", "::1", None, None, None, None]
    check = HostCheck(None, served_names("127.0.0.1", ["*.lan.example"]))
    assert all(map(check.allows, ["127.0.0.1:8080", "localhost", "[::1]:1", "box.lan.example:9"]))
    assert not any(map(check.allows, ["lan.example", "evil-lan.example", "localhost.", "127.0.0.1.nip.io"]))
    assert HostCheck(None, ["*"]).allows("anything.example")


def test_the_api_refuses_a_foreign_host_in_process(concept_index):
    from fastapi.testclient import TestClient

    from clsr.interpret.explorer import Explorer
    from clsr.interpret.serve import create_app

    app = create_app(Explorer(concept_index, dtype="fp32"))
    with TestClient(app) as client:  # TestClient's own Host, "testserver", is no name this server has
        refused = client.get("/api/documents/d2")
        assert refused.status_code == 421 and "Solar" not in refused.text
        assert client.get("/api/documents/d2", headers={"Host": "localhost:8080"}).json()["docid"] == "d2"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(port: int, path: str, host: str | None) -> tuple[int, str]:
    """A GET with exactly this Host header (None: none at all), over a real socket."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.mark.slow
def test_clsr_serve_answers_only_its_own_host_names_over_http(concept_index):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "clsr.interpret", "serve",
                               "--index", str(concept_index), "--port", str(port),
                               "--dtype", "fp32", "--allowed-hosts", "clsr.example"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(240):
            try:
                if _request(port, "/api/info", f"127.0.0.1:{port}")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"clsr serve exited: {server.stdout.read()}")
            time.sleep(0.5)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", f"LOCALHOST:{port}",
                     f"clsr.example:{port}"):
            status, body = _request(port, "/api/documents/d2", host)
            assert status == 200 and "Solar panels convert sunlight" in body, (host, status, body)
        for host in (f"attacker.example:{port}", "localhost.attacker.example", f"192.168.1.23:{port}",
                     f"127.0.0.1.nip.io:{port}", "", "foo?", f"[::2]:{port}", f"sub.clsr.example:{port}", None):
            status, body = _request(port, "/api/documents/d2", host)
            assert status in (400, 421) and "Solar" not in body, (host, status, body)
            if host is not None and host != "":
                assert status == 421 and "--allowed-hosts" in json.loads(body)["detail"]
        status, body = _request(port, "/api/search?q=caf%C3%A9%20na%C3%AFve%20solar&k=1", f"localhost:{port}")
        assert status == 200 and json.loads(body)["query"] == "café naïve solar"
        status, body = _request(port, "/api/search?q=%E5%B9%B2%E7%BB%86%E8%83%9E&k=1", f"127.0.0.1:{port}")
        assert status == 200 and json.loads(body)["query"] == "干细胞"
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- 22: ids that differ only by Unicode normalisation ----------------------------------------------------------

NFC_CAFE, NFD_CAFE = "caf\u00e9-1", "cafe\u0301-1"


def test_evaluate_compares_ids_as_written_and_names_normalisation_matches(tmp_path, caplog, capsys):
    run = _write(tmp_path / "run.trec", f"q1 Q0 {NFC_CAFE} 1 2.0 t\nq1 Q0 plain-3 2 1.0 t\n"
                                        f"q2 Q0 z\u00fcrich-2 1 1.0 t\n")
    qrels = _write(tmp_path / "qrels.trec", f"q1 0 {NFD_CAFE} 1\nq2 0 zu\u0308rich-2 1\n")
    with caplog.at_level(logging.WARNING):
        clsr(["evaluate", "--run", str(run), "--qrels", str(qrels), "--metrics", "mrr@10", "--json"])
    assert json.loads(capsys.readouterr().out) == {"mrr@10": 0.0}  # as trec_eval: no match
    assert f"{qrels}: 2 document ids match ids of {run} only after Unicode normalisation" in caplog.text
    assert "'cafe\\u0301-1' (NFD) ~ 'caf\\xe9-1' (NFC)" in caplog.text
    caplog.clear()
    same = _write(tmp_path / "qrels-nfc.trec", f"q1 0 {NFC_CAFE} 1\nq2 0 plain-9 1\n")
    with caplog.at_level(logging.WARNING):
        assert evaluate(read_run(run), load_qrels(same), ["mrr@10"]) == {"mrr@10": 0.5}
    assert "normalisation" not in caplog.text


def test_nfkc_ids_and_nfd_query_ids_of_a_beir_folder_are_named(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        evaluate({"q": [("d1", 1.0)]}, {"q": {"\uff44\uff11": 1}}, ["mrr@10"])  # full-width "ｄ１"
    assert "'\\uff44\\uff11' (NFC) ~ 'd1' (NFC)" in caplog.text
    beir = tmp_path / "beir"
    _write(beir / "queries.jsonl", json.dumps({"_id": "r\u00e9q-4", "text": "coffee"}, ensure_ascii=False) + "\n")
    _write(beir / "qrels" / "test.tsv", f"query-id\tcorpus-id\tscore\nre\u0301q-4\t{NFC_CAFE}\t1\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_topics(beir) == {}
    assert "1 query ids match ids of" in caplog.text and "'re\\u0301q-4' (NFD) ~ 'r\\xe9q-4' (NFC)" in caplog.text
