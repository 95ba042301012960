"""Property tests (hypothesis): evaluation equals trec_eval (through pytrec_eval) on random judgments and
runs, ties and graded grades included; every reader either loads a file or names its file and line."""

import re

import pytest
import pytrec_eval
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clsr.data import DataError, load_corpus, load_qrels, load_topics
from clsr.evaluate import evaluate, read_run, trec_eval_order, write_run

DOCIDS = st.sampled_from([f"d{i}" for i in range(12)] + ["D1", "d10a", "Ω"])
# Few distinct scores, so that ties are common.
SCORES = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25, -1.0])


@st.composite
def judged_runs(draw):
    qids = draw(st.lists(st.sampled_from(["1", "2", "q3", "04"]), min_size=1, max_size=4, unique=True))
    qrels = {qid: draw(st.dictionaries(DOCIDS, st.integers(0, 3), min_size=1, max_size=8)) for qid in qids}
    run = {}
    for qid in draw(st.lists(st.sampled_from(qids + ["9"]), max_size=5, unique=True)):
        docids = draw(st.lists(DOCIDS, max_size=12, unique=True))
        run[qid] = [(docid, draw(SCORES)) for docid in docids]
    return qrels, run


def _trec_eval(qrels, run, measures, cutoff_run: int | None = None):
    """trec_eval's per-query values through pytrec_eval, averaged over the judged queries (-c)."""
    if cutoff_run is not None:  # recip_rank has no cutoff in pytrec_eval: cut the run in trec_eval's order
        run = {q: trec_eval_order(hits)[:cutoff_run] for q, hits in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)
    per_query = evaluator.evaluate({q: dict(hits) for q, hits in run.items() if q in qrels and hits})
    keys = [m.replace(".", "_") for m in measures]
    return {k: sum(per_query.get(q, {}).get(k, 0.0) for q in qrels) / len(qrels) for k in keys}


@settings(max_examples=300, deadline=None)
@given(judged_runs())
def test_evaluation_equals_trec_eval(case):
    qrels, run = case
    ours = evaluate(run, qrels, ["ndcg@10", "recall@5", "precision@5", "mrr@10"])
    theirs = _trec_eval(qrels, run, {"ndcg_cut.10", "recall.5", "P.5"})
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg_cut_10"], abs=1e-12)
    assert ours["recall@5"] == pytest.approx(theirs["recall_5"], abs=1e-12)
    assert ours["precision@5"] == pytest.approx(theirs["P_5"], abs=1e-12)
    assert ours["mrr@10"] == pytest.approx(_trec_eval(qrels, run, {"recip_rank"}, 10)["recip_rank"], abs=1e-12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(judged_runs())
def test_a_written_run_reads_back_and_evaluates_the_same(tmp_path, case):
    qrels, run = case
    path = tmp_path / "run.trec"
    write_run(run, path)
    again = read_run(path)
    assert {q: sorted(h) for q, h in again.items()} == {q: sorted(h) for q, h in run.items() if h}
    assert evaluate(again, qrels) == evaluate(run, qrels)
    for hits in again.values():
        assert hits == trec_eval_order(hits)  # the rank column is the evaluation order


LINE_PIECES = st.sampled_from(["\t", " ", "\n", "\r\n", "\ufeff", "{", "}", '"', ":", ",", "_id", "id", "text",
                               "title", "contents", "q1", "d1", "Q0", "1", "2.5", "x", "\\ud83d", "query-id",
                               "é", "\x00"])
RAW_BYTES = st.one_of(
    st.lists(LINE_PIECES, max_size=40).map(lambda pieces: "".join(pieces).encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
)
# A file-level error has no line: an empty corpus, or a file compressed with a codec clsr does not read.
LOCATED = re.compile(r"^(.+?):(\d+): |^(.+?): (?:no documents$|compressed with )")


@pytest.mark.parametrize("name, reader", [
    ("corpus.jsonl", load_corpus), ("corpus.tsv", load_corpus), ("queries.jsonl", load_topics),
    ("queries.tsv", load_topics), ("qrels.txt", load_qrels), ("run.trec", read_run),
])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=RAW_BYTES)
def test_every_reader_loads_or_names_the_file_and_line(tmp_path, name, reader, content):
    path = tmp_path / name
    path.write_bytes(content)
    try:
        reader(path)
    except DataError as e:
        match = LOCATED.match(str(e))
        assert match and (match.group(1) or match.group(3)) == str(path), str(e)
