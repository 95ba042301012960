"""MS MARCO's evaluation path, end to end and small (Step 19, item 6): `clsr encode` → `clsr index --embeddings` →
`clsr search` on the DL19 topics and on dev-subset topics → `clsr evaluate --relevance-threshold 2`, on a slice of
the 5k-passage DL19 subset, the commands docs/scaling-out.md gives for the full collection.

The slice (about 300 passages, so a cold cache encodes it in seconds): every judged passage of the eight DL19
queries with the fewest, the six dev-subset passages the subset holds (five queries), and unjudged passages. The
metrics are held to trec_eval's own code (pytrec_eval) at the same relevance level, on the runs clsr wrote.
"""

import json
from pathlib import Path

import pytest

from clsr.cli import main as clsr

DL19_QUERIES = 8
SLICE = 300
METRICS = ["ndcg@10", "mrr@10", "precision@10", "recall@100", "recall@1000"]


def _qrels_rows(path: Path) -> list[tuple[str, str, int]]:
    lines = path.read_text().splitlines()[1:]  # BEIR's header
    return [(q, d, int(s)) for q, d, s in (line.split("\t") for line in lines if line)]


@pytest.fixture(scope="module")
def msmarco(tmp_path_factory, shared_data) -> Path:
    """slice/ (BEIR layout: corpus, the eight DL19 queries and their qrels), dl19-queries.tsv (all 43),
    dev-queries.tsv and dev-qrels.tsv (as MS MARCO ships queries.dev.small.tsv and qrels.dev.small.tsv, restricted
    to the subset's passages), emb/ from `clsr encode`, and index/ built from them with `--embeddings`."""
    source = shared_data / "msmarco-passage"
    subset = source / "subset-dl19-5k"
    corpus = [json.loads(line) for line in (subset / "corpus.jsonl").read_text(encoding="utf-8").split("\n") if line]
    by_id = {record["_id"]: record for record in corpus}
    dl19 = _qrels_rows(subset / "qrels" / "test.tsv")
    judged_count: dict[str, int] = {}
    for query, _, _ in dl19:
        judged_count[query] = judged_count.get(query, 0) + 1
    chosen = sorted(judged_count, key=lambda q: (judged_count[q], q))[:DL19_QUERIES]
    dl19 = [row for row in dl19 if row[0] in chosen]
    dev = [row for row in _qrels_rows(source / "qrels" / "dev.small.tsv") if row[1] in by_id]
    wanted = list(dict.fromkeys([d for _, d, _ in dl19] + [d for _, d, _ in dev]))
    judged_anywhere = {d for _, d, _ in _qrels_rows(subset / "qrels" / "test.tsv")}
    wanted += [r["_id"] for r in corpus if r["_id"] not in judged_anywhere and r["_id"] not in wanted][
        :SLICE - len(wanted)]

    work = tmp_path_factory.mktemp("msmarco")
    (work / "slice" / "qrels").mkdir(parents=True)
    (work / "slice" / "corpus.jsonl").write_text(
        "".join(json.dumps(by_id[d], ensure_ascii=False) + "\n" for d in wanted), encoding="utf-8")
    dl19_topics = [json.loads(line) for line in (subset / "queries.jsonl").read_text(encoding="utf-8").split("\n")
                   if line]
    (work / "slice" / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in dl19_topics
                                                          if q["_id"] in chosen), encoding="utf-8")
    # All 43 DL19 topics as Anserini ships them (topics.dl19-passage.txt: id TAB text); 35 have no judgments here.
    (work / "dl19-queries.tsv").write_text("".join(f"{q['_id']}\t{q['text']}\n" for q in dl19_topics),
                                           encoding="utf-8")
    (work / "slice" / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in dl19))
    queries = {}
    for line in (source / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        queries[record["_id"]] = record["text"]
    dev_queries = sorted({q for q, _, _ in dev})
    (work / "dev-queries.tsv").write_text("".join(f"{q}\t{queries[q]}\n" for q in dev_queries), encoding="utf-8")
    (work / "dev-qrels.tsv").write_text("".join(f"{q}\t0\t{d}\t{s}\n" for q, d, s in dev))  # TREC qrels, as MS MARCO's

    clsr(["encode", "--corpus", str(work / "slice"), "--output", str(work / "emb"), "--dtype", "fp32"])
    clsr(["index", "--corpus", str(work / "slice"), "--embeddings", str(work / "emb"), "--index",
          str(work / "index"), "--no-describe", "--no-tune-alpha", "--dtype", "fp32"])
    return work


def _evaluate(capsys, run: Path, qrels: Path, threshold: int) -> dict[str, float]:
    capsys.readouterr()
    clsr(["evaluate", "--run", str(run), "--qrels", str(qrels), "--relevance-threshold", str(threshold), "--json",
          "--metrics", *METRICS])
    return json.loads(capsys.readouterr().out)


def _trec_eval(run: Path, qrels_rows: list[tuple[str, str, int]], level: int) -> dict[str, float]:
    """METRICS (mrr@10 as trec_eval -M 10 recip_rank) by trec_eval's C code at
    relevance level `level`, averaged over every judged query (-c)."""
    import pytrec_eval

    from clsr.evaluate import read_run

    qrels: dict[str, dict[str, int]] = {}
    for query, doc, grade in qrels_rows:
        qrels.setdefault(query, {})[doc] = grade
    hits = read_run(run)
    full = {q: {d: float(s) for d, s in hits.get(q, [])} for q in qrels}
    # trec_eval ranks by score, ties by docid descending; -M 10 keeps the first ten of that order.
    top10 = {q: dict(sorted(found.items(), key=lambda h: (h[1], h[0]), reverse=True)[:10]) for q, found in
             full.items()}
    measures = {"ndcg_cut.10", "P.10", "recall.100", "recall.1000"}
    scores = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=level).evaluate(full)
    ranks = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=level).evaluate(top10)

    def mean(values) -> float:
        return sum(values) / len(qrels)

    return {"ndcg@10": mean(scores.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels),
            "mrr@10": mean(ranks.get(q, {}).get("recip_rank", 0.0) for q in qrels),
            "precision@10": mean(scores.get(q, {}).get("P_10", 0.0) for q in qrels),
            "recall@100": mean(scores.get(q, {}).get("recall_100", 0.0) for q in qrels),
            "recall@1000": mean(scores.get(q, {}).get("recall_1000", 0.0) for q in qrels)}


def test_dl19_topics_from_given_embeddings_evaluate_as_trec_eval_at_level_2(msmarco, capsys):
    run = msmarco / "dl19.trec"
    clsr(["search", "--index", str(msmarco / "index"), "--topics", str(msmarco / "dl19-queries.tsv"), "--output",
          str(run)])
    lines = run.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 43  # every DL19 topic searched
    qrels = _qrels_rows(msmarco / "slice" / "qrels" / "test.tsv")
    at_2 = _evaluate(capsys, run, msmarco / "slice", 2)
    at_1 = _evaluate(capsys, run, msmarco / "slice", 1)
    assert at_2 == pytest.approx(_trec_eval(run, qrels, 2), abs=1e-12)
    assert at_1 == pytest.approx(_trec_eval(run, qrels, 1), abs=1e-12)
    # Grade-1 passages stop counting at level 2 (nDCG uses the grades and does not change): P@10 falls unless no
    # query has a grade-1 passage in its top ten, and query 1121709 has 9 of its 12 judged passages at grade 1.
    assert at_2["ndcg@10"] == at_1["ndcg@10"]
    assert at_2["precision@10"] < at_1["precision@10"]
    # A random order gives each query's ~18 judged passages of 300 an nDCG@10 near 0.06; this slice measures
    # 0.875 here and the whole subset 0.80 (docs/scaling-out.md).
    assert at_2["ndcg@10"] > 0.5


def test_dev_subset_topics_in_msmarco_format_evaluate_as_trec_eval(msmarco, capsys):
    run = msmarco / "dev.tsv"
    clsr(["search", "--index", str(msmarco / "index"), "--topics", str(msmarco / "dev-queries.tsv"), "--output",
          str(run), "--output-format", "msmarco", "--hits", "10"])
    rows = [line.split("\t") for line in run.read_text().splitlines()]
    assert {r[0] for r in rows} == {line.split("\t")[0] for line in
                                    (msmarco / "dev-queries.tsv").read_text().splitlines()}
    assert all(len(r) == 3 for r in rows)  # qid, pid, rank: MS MARCO's own run format
    qrels = [(q, d, int(s)) for q, _, d, s in (line.split("\t") for line in
                                               (msmarco / "dev-qrels.tsv").read_text().splitlines())]
    scores = _evaluate(capsys, run, msmarco / "dev-qrels.tsv", 1)
    assert scores == pytest.approx(_trec_eval(run, qrels, 1), abs=1e-12)
    # One judged passage (six for five queries) among 300: a random order's MRR@10 is about 0.01 (the sum of 1/r
    # for r <= 10, over 300); the judged passage comes first for every query on the CPUs tried.
    assert scores["mrr@10"] > 0.5
