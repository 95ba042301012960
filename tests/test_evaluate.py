import math
import subprocess
import sys

import pytest

from clsr.data import DataError, load_qrels
from clsr.evaluate import evaluate, per_query, read_run, write_run
from clsr.jvm import java_environment


def test_metrics_on_a_hand_made_run():
    qrels = {"q1": {"d1": 2, "d2": 1, "d9": 0}, "q2": {"d5": 1}}
    run = {"q1": [("d3", 0.9), ("d1", 0.8), ("d2", 0.7)], "q2": [("d4", 2.0)]}
    scores = evaluate(run, qrels, ["ndcg@10", "mrr@10", "recall@100", "recall@2"])
    ndcg_q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert scores["ndcg@10"] == pytest.approx(ndcg_q1 / 2)
    assert scores["mrr@10"] == pytest.approx(0.5 / 2)
    assert scores["recall@100"] == pytest.approx(1.0 / 2)
    assert scores["recall@2"] == pytest.approx(0.5 / 2)


def test_queries_without_hits_count_as_zero_like_trec_eval_minus_c():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert evaluate({"q1": [("d1", 1.0)]}, qrels)["mrr@10"] == 0.5


def test_ties_are_broken_by_docid_descending_whatever_the_file_order():
    qrels = {"q": {"a": 1}}
    run = {"q": [("a", 1.0), ("b", 1.0)]}
    assert per_query(run, qrels, ["mrr@10"])["mrr@10"]["q"] == 0.5


def test_relevance_threshold_applies_to_mrr_and_recall_not_ndcg():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": [("a", 2.0), ("b", 1.0)]}
    strict = evaluate(run, qrels, ["mrr@10", "recall@1", "ndcg@10"], relevance_threshold=2)
    loose = evaluate(run, qrels, ["mrr@10", "recall@1", "ndcg@10"], relevance_threshold=1)
    assert (strict["mrr@10"], strict["recall@1"]) == (0.5, 0.0)
    assert (loose["mrr@10"], loose["recall@1"]) == (1.0, 0.5)
    assert strict["ndcg@10"] == loose["ndcg@10"]


def test_run_files_round_trip_in_both_formats(tmp_path):
    run = {"q1": [("d1", 3.5), ("d2", 1.25)], "q2": [("d3", 0.5)]}
    write_run(run, tmp_path / "r.trec", tag="t")
    assert (tmp_path / "r.trec").read_text().splitlines()[0] == "q1 Q0 d1 1 3.5 t"  # shortest round-trip text
    assert read_run(tmp_path / "r.trec") == run
    write_run(run, tmp_path / "r.tsv", output_format="msmarco")
    assert (tmp_path / "r.tsv").read_text().splitlines()[1] == "q1\td2\t2"
    assert read_run(tmp_path / "r.tsv") == {"q1": [("d1", 1.0), ("d2", 0.5)], "q2": [("d3", 1.0)]}


def test_bad_run_line_is_named(tmp_path):
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 1.0 t\nq1 d2\n")
    with pytest.raises(DataError, match=r"bad\.trec:2: expected 6 \(TREC\) or 3 \(MS MARCO\) columns"):
        read_run(tmp_path / "bad.trec")


def test_cli_says_how_many_queries_it_averaged_over(tmp_path, capsys, caplog):
    import json
    import logging

    from clsr.cli import main as clsr

    write_trec_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}, tmp_path / "qrels.txt")
    # q3 is judged but not in the run; q8 and q9 are in the run but not judged.
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d5 1 1.0 t\nq8 Q0 d1 1 1.0 t\nq9 Q0 d2 1 1.0 t\n")
    argv = ["evaluate", "--run", str(tmp_path / "run.trec"), "--qrels", str(tmp_path / "qrels.txt"),
            "--metrics", "mrr@10"]
    with caplog.at_level(logging.INFO, logger="clsr"):
        clsr(argv)
    assert capsys.readouterr().out.splitlines() == ["num_q        3", "mrr@10       0.3333"]
    note = ("averaged over 3 judged queries (trec_eval -c); 1 of them have no hits in the run and score 0; "
            "2 run queries have no judgments and are left out")
    assert note in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clsr"):
        clsr([*argv, "--json"])
    assert json.loads(capsys.readouterr().out) == {"mrr@10": 1 / 3} and note in caplog.text


def pyserini_trec_eval(qrels_file, run_file, *args: str) -> dict[str, float]:
    # Through clsr.jvm, as the README says to run Pyserini's CLIs here: offline, Pyserini 2.x's own
    # `python -m pyserini.eval.trec_eval` fails at import (it fetches the prebuilt-index catalogue).
    command = [sys.executable, "-m", "clsr.jvm", "pyserini.eval.trec_eval", "-c", *args, str(qrels_file), str(run_file)]
    env = java_environment()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    values = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] == "all":
            values[fields[0]] = float(fields[2])
    return values


def write_trec_qrels(qrels, path):
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, judged in qrels.items() for d, g in judged.items()))


def compare_with_pyserini(qrels, run_file, tmp_path, threshold: int):
    qrels_file = tmp_path / "qrels.txt"
    write_trec_qrels(qrels, qrels_file)
    level = ["-l", str(threshold)] if threshold > 1 else []
    if level:
        ndcg = pyserini_trec_eval(qrels_file, run_file, "-m", "ndcg_cut.10")
        binary = pyserini_trec_eval(qrels_file, run_file, *level, "-m", "recall.100,1000", "-m", "P.10")
    else:  # no -l: nDCG and the binary measures are read off one trec_eval (one JVM start-up fewer)
        ndcg = binary = pyserini_trec_eval(qrels_file, run_file, "-m", "ndcg_cut.10", "-m", "recall.100,1000",
                                           "-m", "P.10")
    mrr = pyserini_trec_eval(qrels_file, run_file, *level, "-M", "10", "-m", "recip_rank")
    ours = evaluate(read_run(run_file), qrels, ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "precision@10"],
                    relevance_threshold=threshold)
    assert ours["precision@10"] == pytest.approx(binary["P_10"], abs=1e-4)
    assert ours["ndcg@10"] == pytest.approx(ndcg["ndcg_cut_10"], abs=1e-4)
    assert ours["recall@100"] == pytest.approx(binary["recall_100"], abs=1e-4)
    assert ours["recall@1000"] == pytest.approx(binary["recall_1000"], abs=1e-4)
    assert ours["mrr@10"] == pytest.approx(mrr["recip_rank"], abs=1e-4)
    return ours


@pytest.mark.slow
def test_agrees_with_pyserini_trec_eval_on_scifact_bm25(scifact_bm25_run, tmp_path):
    ours = compare_with_pyserini(load_qrels("scifact", "test"), scifact_bm25_run, tmp_path, threshold=1)
    assert round(ours["ndcg@10"], 4) == 0.6789  # Pyserini's published BM25-flat figure


@pytest.mark.slow
def test_agrees_with_pyserini_trec_eval_on_graded_dl19_with_threshold_2(dl19_subset_bm25_run, shared_data, tmp_path):
    qrels = load_qrels(shared_data / "msmarco-passage" / "subset-dl19-5k", "test")
    compare_with_pyserini(qrels, dl19_subset_bm25_run, tmp_path, threshold=2)
