"""Which mix of words and concepts `clsr index` records by default (issue 31): rules chosen on tuning splits,
reported on test splits, with no judgments needed at query time.

One score per query and passage: S = S_c / N_c(q) + W · S_w / N_w(q), S_c the concept part (integer dot product
of the query's and the passage's concept impacts, as Lucene scores them), S_w the word part (the query's word
counts times the passage's quantised BM25 impacts, `clsr.index.words`). The rules for the normalisers:

* ``top``: each side's top score for the query (the two-pass reference the issue measured; not one pass);
* ``bound``: each side's upper bound, Σ_i q_i · max_d impact(i, d), from the query and the index's per-term maxima;
* ``self``: each side's score for the query taken as a passage (its own words weighed by BM25 with |d| = its length;
  its own concept activations through the documents' quantiser): a perfect match;
* ``none``: the raw integer scores (the query's concept weights are scaled to 255 already).

Scores are computed exactly in numpy (sparse products of the same integer impacts Lucene holds), so every rule and
W is evaluated on the same candidates; the word part alone is checked against Lucene's own BM25 run.

Usage: python benchmarks/mix_rule.py [--out benchmarks/results/mix-rule.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sparse
from harness import machine_info, versions, write_report

from clsr.data import load_corpus, load_qrels, load_topics
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.evaluate import evaluate
from clsr.index.concepts import ConceptEncoder, Quantizer
from clsr.index.doc_codes import ACTIVATION_DTYPE
from clsr.index.lucene import BM25_B, BM25_K1
from clsr.index.words import analyze, lucene_length, word_impacts
from clsr.interpret.describers import BROAD_SHARE
from clsr.sae.model import TopKSae, default_sae_path, sae_relation

COLLECTIONS = {  # dataset -> (tuning split, test split)
    "scifact": ("train", "test"),
    "nfcorpus": ("dev", "test"),
    "msmarco-passage/subset-dl19-5k": ("test", "test"),  # DL19, the subset's one judged split: tuned and reported
}
SPLADE_PP_ED = {"scifact": 0.7036, "nfcorpus": 0.3473}  # published nDCG@10 (BEIR), as ../shared/README.md gives
WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0]
RULES = ("top", "bound", "self", "self-idf", "none")
SHARE_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def _runs(scores: np.ndarray, qids, docids, depth: int = 1000) -> dict:
    run = {}
    for row, qid in enumerate(qids):
        values = scores[row]
        top = np.argpartition(-values, min(depth, len(values) - 1))[:depth]
        top = top[np.argsort(-values[top], kind="stable")]  # ranked: RRF reads the order
        run[qid] = [(docids[i], float(values[i])) for i in top if values[i] > 0]
    return run


def _rrf(first: np.ndarray, second: np.ndarray, qids, docids, depth: int = 1000, k: int = 60) -> dict:
    from clsr.fusion import reciprocal_rank_fusion

    return reciprocal_rank_fusion([_runs(first, qids, docids, depth), _runs(second, qids, docids, depth)], k)


def collection(dataset: str, encoder: DenseEncoder, sae: TopKSae, doc_k: int) -> dict:
    """Exact word and concept score matrices for the dataset's tuning and test queries."""
    documents = load_corpus(dataset)
    docids = [d.id for d in documents]
    start = time.perf_counter()
    tokens = [analyze(d.text) for d in documents]
    doc_words, stats = word_impacts(tokens, BM25_K1, BM25_B)
    analyse_s = time.perf_counter() - start
    vocabulary = {w: i for i, w in enumerate(doc_words.vocabulary)}
    words = sparse.csr_matrix((doc_words.impacts.astype(np.float64), doc_words.words, doc_words.indptr),
                              shape=(len(documents), len(vocabulary)))
    embeddings = encode_corpus(encoder, documents).embeddings
    activations, latents = sae.encode_numpy(np.asarray(embeddings), doc_k)
    activations = activations.astype(ACTIVATION_DTYPE).astype(np.float32)
    doc_quantizer = Quantizer.fit(activations, 8)
    impacts = doc_quantizer.quantize(activations)
    rows = np.repeat(np.arange(len(documents)), doc_k)
    concepts = sparse.csr_matrix((impacts.ravel().astype(np.float64), (rows, latents.ravel())),
                                 shape=(len(documents), sae.config.n_latents))
    # Concepts' document frequencies: a concept's idf (as BM25's, from its df) for the idf-weighted rule, and which
    # concepts are broad (on BROAD_SHARE of the passages or more) for the shares of the score.
    concept_df = np.bincount(latents[impacts > 0].ravel(), minlength=sae.config.n_latents)
    concept_idf = np.log(1 + (len(documents) - concept_df + 0.5) / (concept_df + 0.5))
    broad = concept_df / len(documents) >= BROAD_SHARE
    word_max = np.asarray(words.max(axis=0).todense()).ravel()
    concept_max = np.asarray(concepts.max(axis=0).todense()).ravel()
    concept_encoder = ConceptEncoder(encoder, sae, doc_k=doc_k, query_k=sae.config.k, doc_quantizer=doc_quantizer)
    word_quantizer = Quantizer.from_dict(stats.quantizer)
    idf = np.zeros(len(vocabulary))
    document_frequency = np.bincount(doc_words.words, minlength=len(vocabulary))
    idf[:] = np.log(1 + (len(documents) - document_frequency + 0.5) / (document_frequency + 0.5))
    splits = {}
    for split in dict.fromkeys(COLLECTIONS[dataset]):
        topics = load_topics(dataset, split)
        qrels = load_qrels(dataset, split)
        qids = [q for q in topics if q in qrels]
        texts = [topics[q] for q in qids]
        query_embeddings = encoder.encode_queries(texts)
        values, indices = concept_encoder.query_codes(query_embeddings)
        query_impacts = concept_encoder.query_quantizer.quantize(values)
        q_rows = np.repeat(np.arange(len(qids)), values.shape[1])
        q_concepts = sparse.csr_matrix((query_impacts.ravel().astype(np.float64), (q_rows, indices.ravel())),
                                       shape=(len(qids), sae.config.n_latents))
        # The query as a passage: its own activations through the documents' quantiser (a perfect concept match).
        self_concepts = (query_impacts * doc_quantizer.quantize(values)).sum(axis=1).astype(np.float64)
        q_idf = q_concepts.multiply(concept_idf[None, :]).tocsr()
        self_idf = (query_impacts * concept_idf[indices] * doc_quantizer.quantize(values)).sum(axis=1)
        q_broad, q_idf_broad = (q.multiply(broad[None, :].astype(np.float64)).tocsr() for q in (q_concepts, q_idf))
        word_rows, word_cols, word_vals, self_words = [], [], [], []
        for row, text in enumerate(texts):
            query_tokens = analyze(text)
            counts: dict[int, int] = {}
            for token in query_tokens:
                if token in vocabulary:
                    counts[vocabulary[token]] = counts.get(vocabulary[token], 0) + 1
            norm = BM25_K1 * (1 - BM25_B + BM25_B * lucene_length(len(query_tokens)) / stats.avgdl)
            own = sum(c * word_quantizer.quantize(np.array([idf[w] * c / (c + norm)]))[0] for w, c in counts.items())
            self_words.append(float(own))
            for word, count in counts.items():
                word_rows.append(row)
                word_cols.append(word)
                word_vals.append(float(count))
        q_words = sparse.csr_matrix((word_vals, (word_rows, word_cols)), shape=(len(qids), len(vocabulary)))
        splits[split] = {
            "qids": qids, "qrels": qrels,
            "words": (q_words @ words.T).toarray(), "concepts": (q_concepts @ concepts.T).toarray(),
            "concepts_idf": (q_idf @ concepts.T).toarray(),
            "broad": (q_broad @ concepts.T).toarray(), "broad_idf": (q_idf_broad @ concepts.T).toarray(),
            "bound": (q_words @ word_max, q_concepts @ concept_max),
            "self": (np.array(self_words), self_concepts),
            "self-idf": (np.array(self_words), np.asarray(self_idf, np.float64)),
        }
    return {"docids": docids, "splits": splits, "analyse_s": analyse_s, "word_stats": dataclasses.asdict(stats)}


def normalisers(split: dict, rule: str) -> tuple[np.ndarray, np.ndarray]:
    words, concepts = split["words"], split["concepts"]
    if rule == "top":
        return words.max(axis=1), concepts.max(axis=1)
    if rule in ("bound", "self", "self-idf"):
        return split[rule]
    return np.ones(len(words)), np.ones(len(concepts))


def _safe(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 1.0)[:, None]  # a side with no match adds nothing


def mixed(split: dict, rule: str, weight: float) -> np.ndarray:
    word_norm, concept_norm = normalisers(split, rule)
    concepts = split["concepts_idf" if rule.endswith("idf") else "concepts"]
    return concepts / _safe(concept_norm) + weight * split["words"] / _safe(word_norm)


def shares(split: dict, rule: str, weight: float, top: int = 10) -> dict[str, float]:
    """What words, specific concepts and broad concepts carry of the top ``top`` passages' mixed scores, averaged."""
    word_norm, concept_norm = normalisers(split, rule)
    idf = rule.endswith("idf")
    words = weight * split["words"] / _safe(word_norm)
    concepts = split["concepts_idf" if idf else "concepts"] / _safe(concept_norm)
    broad = split["broad_idf" if idf else "broad"] / _safe(concept_norm)
    total = words + concepts
    found = {"word": [], "specific": [], "broad": []}
    for row in range(len(total)):
        for col in np.argsort(-total[row])[:top]:
            if total[row, col] > 0:
                found["word"].append(words[row, col] / total[row, col])
                found["broad"].append(broad[row, col] / total[row, col])
                found["specific"].append((concepts[row, col] - broad[row, col]) / total[row, col])
    return {kind: round(float(np.mean(values)), 4) for kind, values in found.items()}


def ndcg(run: dict, qrels, threshold: int) -> float:
    return round(evaluate(run, qrels, ["ndcg@10"], threshold)["ndcg@10"], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/mix-rule.json")
    parser.add_argument("--sae", type=Path, help="an SAE folder, e.g. one adapted to a collection (default: the "
                                                   "shipped SAE); its relation to each collection is reported")
    parser.add_argument("--datasets", nargs="+", choices=list(COLLECTIONS), default=list(COLLECTIONS))
    args = parser.parse_args()
    encoder = DenseEncoder(encoder_config("minilm"))
    sae_path = args.sae or default_sae_path()
    sae = TopKSae.load_from_disk(sae_path)
    results = {}
    for dataset in args.datasets:
        data = collection(dataset, encoder, sae, sae.config.k)
        threshold = 2 if dataset.startswith("msmarco") else 1
        report = {"sae": sae_path.name, "relation": sae_relation(sae_path, dataset), "splits": {},
                  "analyse_s": round(data["analyse_s"], 1), "word_stats": data["word_stats"]}
        for name, split in data["splits"].items():
            qids, docids, qrels = split["qids"], data["docids"], split["qrels"]
            row = {"queries": len(qids),
                   "words only": ndcg(_runs(split["words"], qids, docids), qrels, threshold),
                   "concepts only": ndcg(_runs(split["concepts"], qids, docids), qrels, threshold),
                   "rrf": ndcg(_rrf(split["words"], split["concepts"], qids, docids), qrels, threshold)}
            for rule in RULES:
                row[rule] = {str(w): ndcg(_runs(mixed(split, rule, w), qids, docids), qrels, threshold)
                             for w in WEIGHTS}
            row["shares"] = {rule: {str(w): shares(split, rule, w) for w in SHARE_WEIGHTS}
                             for rule in ("self", "self-idf")}
            report["splits"][name] = row
            print(dataset, name, {k: v for k, v in row.items() if not isinstance(v, dict)}, flush=True)
            for rule in RULES:
                print("  ", rule, row[rule], flush=True)
            print("   shares", row["shares"], flush=True)
        results[dataset] = report
    write_report({"machine": machine_info(), "versions": versions(), "collections": results,
                  "splade_pp_ed": SPLADE_PP_ED}, args.out, _table(results))


def _table(results: dict) -> str:
    lines = ["| collection | split | words only | concepts only | RRF | rule | " +
             " | ".join(f"W={w}" for w in WEIGHTS) + " |", "|" + "---|" * (6 + len(WEIGHTS))]
    for dataset, report in results.items():
        for split, row in report["splits"].items():
            for rule in RULES:
                lines.append(f"| {dataset} | {split} | {row['words only']} | {row['concepts only']} | {row['rrf']} | "
                             f"{rule} | " + " | ".join(str(row[rule][str(w)]) for w in WEIGHTS) + " |")
    lines += ["", "Share of the top 10's mixed scores carried by words / specific concepts / broad concepts (a concept "
              f"on {BROAD_SHARE:.0%} of the passages or more), averaged over the queries:", "",
              "| collection | split | rule | " + " | ".join(f"W={w}" for w in SHARE_WEIGHTS) + " |",
              "|" + "---|" * (3 + len(SHARE_WEIGHTS))]
    for dataset, report in results.items():
        for split, row in report["splits"].items():
            for rule, by_weight in row.get("shares", {}).items():
                cells = (by_weight[str(w)] for w in SHARE_WEIGHTS)
                lines.append(f"| {dataset} | {split} | {rule} | " + " | ".join(
                    f"{c['word']:.1%} / {c['specific']:.1%} / {c['broad']:.1%}" for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
