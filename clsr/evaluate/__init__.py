"""Run files (TREC and MS MARCO formats) and the metrics clsr reports, with trec_eval's semantics.

The numbers equal ``python -m pyserini.eval.trec_eval -c`` on the same run and qrels:

* hits are ranked by score (descending), ties broken by docid (descending), as trec_eval does,
  whatever ranks the run file states; a run without scores (MS MARCO format) scores 1/rank;
* metrics are averaged over every query in the qrels (``-c``): a query with no hits scores 0;
* ``ndcg@10`` uses the graded relevance (``ndcg_cut.10``);
* ``mrr@10`` is ``-M 10 recip_rank``; ``recall@k`` is ``recall.k``; ``precision@k`` is ``P.k``. All three
  count a document as relevant when its grade is at least ``relevance_threshold`` (trec_eval's ``-l``; 2 for TREC DL).

Run ``python -m clsr.evaluate --qrels QRELS --run RUN`` (or ``clsr evaluate``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clsr.data import DataError, Qrels, check_id, text_lines, warn_normalisation_matches

Run = dict[str, list[tuple[str, float]]]
"""query id -> [(document id, score), ...], best first."""

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000")


def score_texts(scores: Sequence[float]) -> list[str]:
    """Scores as run-file text that reads back to the same ranking: the shortest text that round-trips.

    When every score is a float32 value (Lucene's and FAISS's scores are), each is the shortest text
    that rounds back to that float32 (``2.0754``, not ``2.075400073051452``); distinct float32 values
    keep distinct texts in the same order, since rounding is monotone. Otherwise each is Python's
    shortest round-trip repr of the double (``3.9e-07``, ``0.01639344262295082``). Either way no
    score is cut to a fixed number of decimals, which would turn scores below 5e-7 into ties.
    """
    values = np.asarray(scores, dtype=np.float64)
    with np.errstate(over="ignore"):  # a double beyond float32's range is simply not a float32 value
        singles = values.astype(np.float32)
    if np.array_equal(singles.astype(np.float64), values):
        return [str(v) for v in singles]
    return [repr(float(v)) for v in values]


def write_run(run: Run, path: str | os.PathLike, tag: str = "clsr", output_format: str = "trec") -> None:
    """Write TREC (``qid Q0 docid rank score tag``) or MS MARCO (``qid<TAB>docid<TAB>rank``) lines.

    Hits are written in trec_eval's order of their scores, each score as text that reads back to the
    same ranking (`score_texts`), so the rank column is the rank every evaluator, fuser and explanation
    uses, and `read_run` gives back the ranking held in memory. Raises DataError for an id a run
    cannot hold (empty or with whitespace) or a score that is not a finite number; nothing is written then.
    """
    if output_format not in ("trec", "msmarco"):
        raise ValueError(f"output format must be 'trec' or 'msmarco', not {output_format!r}")
    lines = []
    for qid, hits in run.items():
        check_id(qid, "query", f"run for {path}")
        where = f"query {qid!r} of the run for {path}"
        ordered = trec_eval_order((check_id(docid, "document", where), float(score)) for docid, score in hits)
        if not all(math.isfinite(score) for _, score in ordered):
            raise DataError(f"the run for {path}: query {qid!r} has a score that is not a finite number")
        texts = score_texts([score for _, score in ordered]) if output_format == "trec" else []
        for rank, (docid, _) in enumerate(ordered, 1):
            lines.append(f"{qid} Q0 {docid} {rank} {texts[rank - 1]} {tag}\n" if output_format == "trec"
                         else f"{qid}\t{docid}\t{rank}\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC (6 columns) or MS MARCO (3: ``qid docid rank``, scored 1/rank) run file.

    Each query's hits come back in the order of the file's rank column (what RRF fuses, as
    pyserini.fusion does); evaluation re-orders them by trec_eval's rule itself. Raises DataError
    naming the file and line for a malformed line, a score that is not a finite number, and a
    document listed twice for one query (naming both lines), which trec_eval refuses too.
    """
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    listed_at: dict[tuple[str, str], int] = {}
    for line_number, line in text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 6:
            qid, _, docid, rank, score, _ = fields
        elif len(fields) == 3:
            qid, docid, rank = fields
            score = None
        else:
            raise DataError(f"{path}:{line_number}: expected 6 (TREC) or 3 (MS MARCO) columns, got {len(fields)}")
        try:
            position = int(rank)
        except ValueError:
            raise DataError(f"{path}:{line_number}: rank {rank!r} is not an integer") from None
        try:
            value = float(score) if score is not None else 1.0 / position
        except (ValueError, ZeroDivisionError):
            raise DataError(f"{path}:{line_number}: score {score or rank!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}:{line_number}: score {score!r} is not a finite number")
        if (qid, docid) in listed_at:
            raise DataError(f"{path}:{line_number}: document {docid!r} is listed twice for query {qid!r} (first at "
                            f"line {listed_at[qid, docid]}); trec_eval refuses such a run")
        listed_at[qid, docid] = line_number
        ranked.setdefault(qid, []).append((position, docid, value))
    return {qid: [(docid, value) for _, docid, value in sorted(hits, key=lambda h: h[0])]
            for qid, hits in ranked.items()}


def trec_eval_order(hits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """The one tie rule: score descending, then docid descending (byte order), as trec_eval ranks a run.

    Search, explain, fusion, tuning and evaluation all rank by it (see docs/command-line.md, "Score ties").
    """
    return sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)


def _ndcg(ranked: Sequence[str], judged: Mapping[str, int], cutoff: int) -> float:
    gains = [judged.get(docid, 0) for docid in ranked[:cutoff]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:cutoff]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def _reciprocal_rank(ranked: Sequence[str], relevant: set[str], cutoff: int) -> float:
    for i, docid in enumerate(ranked[:cutoff]):
        if docid in relevant:
            return 1.0 / (i + 1)
    return 0.0


def _recall(ranked: Sequence[str], relevant: set[str], cutoff: int) -> float:
    return len(relevant.intersection(ranked[:cutoff])) / len(relevant) if relevant else 0.0


def _precision(ranked: Sequence[str], relevant: set[str], cutoff: int) -> float:
    # trec_eval's P_k: divided by k even when fewer than k documents were retrieved.
    return len(relevant.intersection(ranked[:cutoff])) / cutoff


def metric_function(name: str):
    measure, _, cutoff = name.partition("@")
    functions = {"ndcg": _ndcg, "mrr": _reciprocal_rank, "recall": _recall, "precision": _precision}
    if measure not in functions or not cutoff.isdigit():
        raise ValueError(f"unknown metric {name!r}; use ndcg@K, mrr@K, recall@K or precision@K")
    return measure, functions[measure], int(cutoff)


def per_query(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS,
              relevance_threshold: int = 1) -> dict[str, dict[str, float]]:
    """metric -> {query id -> value}, for every query in the qrels."""
    parsed = [(name, *metric_function(name)) for name in metrics]
    result: dict[str, dict[str, float]] = {name: {} for name in metrics}
    for qid, judged in qrels.items():
        ranked = [docid for docid, _ in trec_eval_order(run.get(qid, []))]
        relevant = {d for d, grade in judged.items() if grade >= relevance_threshold}
        for name, measure, function, cutoff in parsed:
            result[name][qid] = function(ranked, judged if measure == "ndcg" else relevant, cutoff)
    return result


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS,
             relevance_threshold: int = 1, *, qrels_name: str = "the qrels", run_name: str = "the run"
             ) -> dict[str, float]:
    """Mean of each metric over all queries in the qrels (trec_eval -c).

    Ids are compared as written, as trec_eval compares them; judged query or document ids that match the
    run's only after Unicode normalisation (NFC against NFD, say) are named in a warning
    (`check_id_forms`). Raises DataError for empty qrels.
    """
    if not qrels:
        raise DataError("the qrels are empty")
    check_id_forms(run, qrels, qrels_name, run_name)
    scores = per_query(run, qrels, metrics, relevance_threshold)
    return {name: sum(values.values()) / len(values) for name, values in scores.items()}


class Coverage(NamedTuple):
    """How a run's queries meet the judged ones: what `evaluate` averages over."""

    num_q: int  # judged queries, every one in each mean (trec_eval -c's num_q)
    unretrieved: int  # of those, the ones without hits in the run: each scores 0
    unjudged: int  # run queries with no judgments: in no mean


def coverage(run: Run, qrels: Qrels) -> Coverage:
    """The counts of `Coverage` for this run and these qrels."""
    return Coverage(num_q=len(qrels), unretrieved=sum(1 for qid in qrels if not run.get(qid)),
                    unjudged=sum(1 for qid in run if qid not in qrels))


def coverage_note(counts: Coverage) -> str:
    """One line saying what the means were taken over, e.g. for `clsr evaluate`'s log."""
    parts = [f"averaged over {counts.num_q} judged queries (trec_eval -c)"]
    if counts.unretrieved:
        parts.append(f"{counts.unretrieved} of them have no hits in the run and score 0")
    if counts.unjudged:
        parts.append(f"{counts.unjudged} run queries have no judgments and are left out")
    return "; ".join(parts)


def check_id_forms(run: Run, qrels: Qrels, qrels_name: str = "the qrels", run_name: str = "the run") -> None:
    """Warn (clsr.data.warn_normalisation_matches) about judged query and document ids that are not in the run
    as written but are after Unicode normalisation: they would silently never match."""
    warn_normalisation_matches("query", list(qrels), run, qrels_name, run_name)
    retrieved = {docid for hits in run.values() for docid, _ in hits}
    judged = {docid for judgments in qrels.values() for docid in judgments}
    warn_normalisation_matches("document", judged, retrieved, qrels_name, run_name)
