import json
import re

import pytest

from clsr.cli import main as clsr
from clsr.data import Document
from clsr.index import MANIFEST_NAME, InvalidIndexError, build_bm25_index, read_manifest
from clsr.search import open_searcher

DOCS = [Document("d1", "sparse autoencoders find concepts"), Document("d2", "lucene inverted index"),
        Document("d3", "dense retrieval with transformers")]


def test_manifest_describes_the_index(tmp_path):
    build_bm25_index(DOCS, tmp_path / "idx", source="unit-test")
    manifest = read_manifest(tmp_path / "idx")
    assert {k: getattr(manifest, k) for k in ("kind", "documents", "source", "k1", "b")} == {
        "kind": "bm25", "documents": 3, "source": "unit-test", "k1": 0.9, "b": 0.4}
    assert open_searcher(tmp_path / "idx").search("lucene index", 3)[0].docid == "d2"


def test_existing_index_needs_overwrite(tmp_path):
    build_bm25_index(DOCS, tmp_path / "idx")
    with pytest.raises(InvalidIndexError, match="already exists; pass --overwrite"):
        build_bm25_index(DOCS[:1], tmp_path / "idx")
    assert read_manifest(tmp_path / "idx").documents == 3
    build_bm25_index(DOCS[:1], tmp_path / "idx", overwrite=True)
    assert read_manifest(tmp_path / "idx").documents == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_interrupted_build_leaves_nothing_that_looks_like_an_index(tmp_path):
    def interrupted():
        yield DOCS[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_bm25_index(interrupted(), tmp_path / "idx")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rebuild_keeps_the_old_index(tmp_path):
    build_bm25_index(DOCS, tmp_path / "idx")

    def interrupted():
        yield DOCS[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_bm25_index(interrupted(), tmp_path / "idx", overwrite=True)
    assert read_manifest(tmp_path / "idx").documents == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_a_folder_without_manifest_is_not_an_index(tmp_path):
    with pytest.raises(InvalidIndexError, match=f"is not a clsr index \\(no {MANIFEST_NAME}\\)"):
        open_searcher(tmp_path)


@pytest.mark.slow
def test_cli_index_search_evaluate_on_scifact(shared_data, tmp_path, capsys):
    clsr(["index", "--kind", "bm25", "--corpus", "scifact", "--index", str(tmp_path / "bm25")])
    clsr(["search", "--index", str(tmp_path / "bm25"), "--topics", "scifact", "--output", str(tmp_path / "run.tsv"),
          "--output-format", "msmarco", "--hits", "100", "--threads", "2"])
    lines = (tmp_path / "run.tsv").read_text().splitlines()
    # 300 queries x 100 hits, less the few queries that match fewer than 100 passages.
    assert len(lines) == 29966 and lines[0].split("\t")[2] == "1"
    clsr(["evaluate", "--run", str(tmp_path / "run.tsv"), "--qrels", "scifact", "--json"])
    scores = json.loads(capsys.readouterr().out.split("\n", 2)[-1])
    # An MS MARCO run has ranks only (scored 1/rank), so these are the BM25 figures at depth 100.
    assert round(scores["ndcg@10"], 4) == 0.6789 and round(scores["recall@100"], 4) == 0.9253


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "a"}\n{oops}\n')
    with pytest.raises(SystemExit) as exit_info:
        clsr(["index", "--corpus", str(tmp_path / "corpus.jsonl"), "--index", str(tmp_path / "idx")])
    assert "corpus.jsonl:2: malformed JSON" in str(exit_info.value)
    assert not (tmp_path / "idx").exists()


@pytest.mark.slow
def test_demo_runs_all_three_methods_on_a_small_collection(scifact_slice, tmp_path, capsys):
    from clsr.demo import run_demo

    collection = tmp_path / "slice"
    (collection / "qrels").mkdir(parents=True)
    (collection / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in scifact_slice.documents))
    (collection / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in scifact_slice.topics.items()))
    (collection / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, judged in scifact_slice.qrels.items() for d, g in judged.items()))
    run_demo(str(collection), tmp_path / "work")
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("BM25 ", "Dense ", "CL-SR ", "Concepts only"))]
    # The default index first (words and concepts), then its concept part alone, then the baselines.
    assert [line.split()[0] for line in table] == ["CL-SR", "Concepts", "BM25", "Dense"], table
    # On 300 passages that include every judged one, every method finds most relevant passages.
    ndcg = {line.split()[0]: float(line.split()[-5]) for line in table}  # nDCG, R@100, size (2 words), ms
    assert all(value > 0.7 for value in ndcg.values()), table
    assert ndcg["CL-SR"] > max(ndcg["Concepts"], ndcg["BM25"])  # words and concepts beat each part here too
    assert re.search(r"^        words: \w+ \d+%.*; concepts: c\d+ \(.*\) \d+%", out, re.M), out
    # What it encoded with, on what CPU, and how fast: any machine can be compared with the docs' tables.
    from clsr.cpu import cpu_kind
    from clsr.encode.dense import resolve_encoding

    backend, dtype = resolve_encoding()
    assert re.search(rf"Encoding: {backend} {dtype} on \d+ threads?, CPU {cpu_kind()} \(.*\): the dense model encoded "
                     r"\d+\.\d passages/s", out), out
    (runs,) = (tmp_path / "work").glob("*/runs")
    assert sorted(p.name for p in runs.iterdir()) == ["bm25.trec", "cl-sr.trec", "concepts.trec", "dense.trec"]


def test_bm25_batch_search_goes_in_chunks_of_plain_hits_with_a_progress_bar(tmp_path, monkeypatch, capsys):
    import clsr.search as search

    build_bm25_index(DOCS, tmp_path / "idx")
    searcher = search.Bm25Searcher(tmp_path / "idx")
    texts = ["lucene index", "sparse concepts", "dense transformers", " "]  # the blank one gets no hits
    topics = {f"q{i}": texts[i % 4] for i in range(150)}
    monkeypatch.setattr(search, "BM25_CHUNK", 1000)
    whole = searcher.batch_search(topics, k=3, progress=False)
    sizes = []
    one_batch = searcher._searcher.batch_search

    def counted(queries, qids, k, threads):
        sizes.append(len(qids))
        return one_batch(queries, qids, k, threads)

    monkeypatch.setattr(searcher._searcher, "batch_search", counted)
    monkeypatch.setattr(search, "BM25_CHUNK", 64)
    capsys.readouterr()
    chunked = searcher.batch_search(topics, k=3, threads=2)
    bar = capsys.readouterr().err
    assert sizes == [64, 49]  # the 113 queries with text (37 are blank), in chunks of 64
    assert chunked == whole and list(chunked) == list(topics) and chunked["q3"] == []
    assert [h.docid for h in chunked["q0"]][:1] == ["d2"]
    assert all(type(h.docid) is str and type(h.score) is float for hits in chunked.values() for h in hits)
    assert "searching: 100%" in bar and "113/113" in bar  # shown: more than 100 queries
