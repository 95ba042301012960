"""A new user's first hour (issue 20, part B): long stages show progress and their rate, builds say how they
encoded, the hybrid's alpha is tuned at build time, explain ranks as search does, and runs are quiet."""

import json
import os
import re
import subprocess
import sys

import pytest

from clsr.cli import main as clsr
from clsr.evaluate import read_run


def _write_corpus(path, documents) -> str:
    path.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in documents))
    return str(path)


def test_corpus_encoding_draws_a_bar_with_its_rate_even_into_a_file(scifact_slice, tmp_path, capsys, caplog):
    """stderr is not a terminal under pytest, as under nohup or tee: the bar is drawn all the same, and the
    end of the stage logs passages/s with the backend and dtype."""
    import logging

    from clsr.encode.dense import encode_corpus

    with caplog.at_level(logging.INFO, logger="clsr"):
        encode_corpus(scifact_slice.encoder, scifact_slice.documents[:20], cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "encoding corpus: 100%" in err and "20/20" in err and "text/s" in err
    assert "encoding corpus: 20 passages in " in caplog.text and "passages/s (openvino fp32" in caplog.text
    with caplog.at_level(logging.INFO, logger="clsr"):
        encode_corpus(scifact_slice.encoder, scifact_slice.documents[:20], cache_dir=tmp_path)
    assert "20 embeddings read from the cache" in caplog.text and "encoding corpus: 100%" not in capsys.readouterr().err


def test_tqdm_disable_still_turns_the_bars_off(scifact_slice, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    scifact_slice.encoder.encode(["a passage"] * 3, progress=True)
    assert "encoding" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def tuned_index(tmp_path_factory, scifact_slice):
    """`clsr index` of 60 slice passages: the concept index with its alpha tuned on pseudo-queries."""
    work = tmp_path_factory.mktemp("tuned")
    corpus = _write_corpus(work / "corpus.jsonl", scifact_slice.documents[:60])
    return work, corpus


def test_a_concept_build_says_how_it_encoded_and_records_a_tuned_alpha(tuned_index, capsys):
    from clsr.fusion import HybridSearcher, best_alpha
    from clsr.index import read_manifest

    work, corpus = tuned_index
    clsr(["index", "--corpus", corpus, "--index", str(work / "index"), "--dtype", "fp32", "--doc-k", "64",
          "--no-describe"])
    out = capsys.readouterr().out
    record = read_manifest(work / "index").hybrid_alpha
    curve = {float(a): v for a, v in record.curve.items()}
    assert record.alpha == best_alpha(curve) and record.tuned_on == "60 pseudo-queries, seed 0"
    assert set(curve) == {i / 10 for i in range(11)}
    assert f"hybrid alpha {record.alpha} (tuned on 60 pseudo-queries" in out
    assert "built concepts index of 60 documents" in out and "; encoding: 60 passages in " in out
    assert "passages/s (openvino fp32, " in out and "CPU " in out
    # Wherever no alpha is given, the recorded one is used; a given one wins.
    assert HybridSearcher(work / "index", dtype="fp32").alpha == record.alpha
    assert HybridSearcher(work / "index", dtype="fp32", alpha=0.3).alpha == 0.3


def test_an_index_without_a_tuned_alpha_says_so_and_tune_alpha_records_one(slice_concept_index, tmp_path, caplog,
                                                                           capsys):
    import logging
    import shutil

    from clsr.fusion import DEFAULT_ALPHA, HybridSearcher
    from clsr.index import read_manifest

    index = tmp_path / "index"
    shutil.copytree(slice_concept_index, index)
    with caplog.at_level(logging.WARNING):
        assert HybridSearcher(index, dtype="fp32").alpha == DEFAULT_ALPHA
    assert "records no tuned hybrid alpha: using 0.5" in caplog.text and "--record" in caplog.text
    clsr(["tune-alpha", "--index", str(index), "--pseudo-queries", "40", "--dtype", "fp32", "--record", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert read_manifest(index).hybrid_alpha.alpha == printed["best_alpha"]
    assert HybridSearcher(index, dtype="fp32").alpha == printed["best_alpha"]


def test_explain_ranks_as_search_does_with_remove_query(tmp_path, scifact_slice, capsys):
    """ArguAna's queries are documents too: `search --remove-query` drops the query's own document, and
    `explain --remove-query` must give the rank the run gives."""
    documents = scifact_slice.documents[:40]
    corpus = _write_corpus(tmp_path / "corpus.jsonl", documents)
    own = documents[5]
    topics = tmp_path / "queries.tsv"
    topics.write_text(f"{own.id}\t{own.text}\n")
    clsr(["index", "--corpus", corpus, "--index", str(tmp_path / "i"), "--dtype", "fp32", "--no-tune-alpha",
          "--no-describe"])
    clsr(["search", "--index", str(tmp_path / "i"), "--topics", str(topics), "--output", str(tmp_path / "r.trec"),
          "--dtype", "fp32", "--remove-query"])
    run = read_run(tmp_path / "r.trec")[own.id]
    assert own.id not in [docid for docid, _ in run]
    first, second = run[0][0], run[1][0]
    capsys.readouterr()
    for docid, rank in ((first, 1), (second, 2)):
        clsr(["explain", "--index", str(tmp_path / "i"), "--topics", str(topics), "--qid", own.id, "--docid", docid,
              "--remove-query", "--json", "--dtype", "fp32"])
        explanation = json.loads(capsys.readouterr().out)
        assert explanation["rank"] == rank and explanation["score"] == dict(run)[docid]
    clsr(["explain", "--index", str(tmp_path / "i"), "--topics", str(topics), "--qid", own.id, "--docid", first,
          "--dtype", "fp32"])
    out = capsys.readouterr().out
    assert "(rank 2)" in out  # without --remove-query, the query's own document ranks first
    assert f"... ({len(own.text):,} characters)" in out and own.text not in out  # a long query is cut


def test_remove_query_without_a_query_id_is_refused(slice_concept_index, cli_error):
    message = cli_error(["explain", "--index", str(slice_concept_index), "--query", "bone", "--docid", "x",
                         "--remove-query"])
    assert message.endswith("--remove-query needs --qid (the id whose document is left out of the ranking)")


def test_a_search_says_which_split_it_read_and_nothing_else(tmp_path, scifact_bm25_run):
    """Without -v: the split and the search's time, a line each, and none of Lucene's, SLF4J's or Java's start-up
    notes; with the run on stdout, stdout holds the run and nothing else."""
    bm25 = scifact_bm25_run.parent / "index"  # the session's BM25 index of SciFact, only read here
    result = subprocess.run([sys.executable, "-m", "clsr.search", "--index", str(bm25), "--topics",
                             "scifact", "--output", str(tmp_path / "r.trec"), "--hits", "10"],
                            capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "searching" not in line]
    assert len(lines) == 2 and lines[0].startswith("clsr: read 300 queries of split 'test' from "), result.stderr
    assert re.fullmatch(r"clsr: searched 300 queries in \d+\.\d s: \d+\.\d ms/query \(1 thread, query encoding "
                        r"included\)", lines[1]), lines[1]
    assert result.stdout.strip() == "wrote 3000 hits for 300 queries to " + str(tmp_path / "r.trec")
    to_stdout = subprocess.run([sys.executable, "-m", "clsr.search", "--index", str(bm25), "--topics",
                                "scifact", "--output", "/dev/stdout", "--hits", "10"],
                               capture_output=True, text=True, timeout=300, env=os.environ)
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == (tmp_path / "r.trec").read_text()
    assert "wrote 3000 hits for 300 queries to /dev/stdout" in to_stdout.stderr


def test_verbose_logging_leaves_out_faiss_loader_notes():
    code = ("import logging; from clsr.options import configure_logging; configure_logging(True); import faiss; "
            "logging.getLogger('faiss.loader').warning('a real warning still shows')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Could not load library" not in result.stderr and "Loading faiss" not in result.stderr
    assert "WARNING faiss.loader: a real warning still shows" in result.stderr
