"""Write the README's results section from benchmarks/results/*.json (never typed by hand).

    python benchmarks/readme_results.py            # rewrites the block between the markers in README.md

The block sits between ``<!-- results:start -->`` and ``<!-- results:end -->``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
DATASETS = ("scifact", "nfcorpus")
ROWS = [("words_concepts", "**CL-SR: words + concepts** (the default index and mix)"),
        ("concepts_only", "Concepts only (`--words-weight 0`)"), ("words_only", "Words only (quantised BM25)"),
        ("bm25", "BM25 (Pyserini, k1 0.9, b 0.4)"), ("dense", "Dense, all-MiniLM-L6-v2 (exact)"),
        ("rrf_concepts_bm25", "Concepts + BM25, two indexes, RRF"),
        ("hybrid_k128", "Hybrid K=128 (concepts + decoded)"),
        ("splade_pp_ed", "SPLADE++ ED (published figure)")]


def section(results: dict[str, dict]) -> str:
    names = [d for d in DATASETS if d in results]
    header = "| method | " + " | ".join(f"{d} nDCG@10 | ×dense | R@100 | folder MB | search p50 ms"
                                         for d in names) + " |"
    lines = [header, "|---|" + "---|" * (5 * len(names))]
    for key, label in ROWS:
        cells = []
        for d in names:
            m = results[d]["methods"].get(key)
            dense = results[d]["methods"]["dense"]["ndcg@10"]
            if m is None:
                cells.append("– | – | – | – | –")
                continue

            def number(field: str, fmt: str, scale: float = 1.0, m=m) -> str:
                return format(m[field] * scale, fmt) if m.get(field) is not None else "–"

            folder = _folder_mb(results[d]["methods"], key)
            cells.append(f"{m['ndcg@10']:.4f} | {m['ndcg@10'] / dense:.3f} | {number('recall@100', '.4f')} | "
                         f"{folder} | {number('search_ms_p50', '.1f')}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = results[names[0]]
    machine, versions = first["machine"], first["versions"]
    relations = "; ".join(f"{d}: {_sae_label(results[d])}" for d in names)
    lines += ["", f"**Which SAE produced the concept rows** (BM25 and dense use none): {relations}."]
    mix = first["methods"].get("words_concepts", {})
    splits = ', '.join(str(d) + ' ' + str(results[d]['queries']) + ' queries' for d in names)
    lines += ["", f"Test splits ({splits}); one search thread, top 1000. CL-SR: doc K 128, words weight "
              f"{mix.get('words_weight')} with each part normalised by its score for a perfect match (the rule "
              "chosen on tuning splits: [mix-rule](benchmarks/results/mix-rule.md)), searched on "
              f"{mix.get('engine', 'lucene')} (`clsr search`'s default engine); folder MB is the whole index folder "
              "(Lucene, `doc_codes/`, `doc_words/`; the catalogue and an engine's files not counted). Hybrid alpha "
              "tuned on the train/dev split. Measured "
              f"{first['measured'][:10]} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB); clsr {versions['clsr']}, Pyserini {versions['pyserini']} "
              f"(Anserini {versions['anserini']}), torch {versions['torch']}. Full tables, with K=32 and 64, the "
              "reconstructions and the other hybrids: "
              + ", ".join(f"[{d}](benchmarks/results/{d}.md)" for d in names) + "; plots: "
              + ", ".join(f"[{d}](benchmarks/results/{d}-tradeoff.png)" for d in names) + "."]
    return "\n".join(lines)


def _folder_mb(methods: dict, key: str) -> str:
    """The MB on disk a method needs: the whole index folder (Lucene files plus `doc_codes/`). A hybrid searches
    the concept index folder of its K; CL-SR + BM25 needs that of K=128 and BM25's."""
    def folder(name: str) -> float:
        m = methods[name]
        return m.get("folder_bytes", m["index_bytes"] + m.get("doc_codes_bytes", 0)) / 2**20

    if key.startswith("hybrid_k"):
        return f"{folder('sparse_lucene_k' + key.split('_')[1][1:]):.2f}"
    if key in ("clsr_bm25", "rrf_concepts_bm25"):
        return f"{folder('sparse_lucene_k128') + folder('bm25'):.2f}"
    if key == "concepts_only":  # the `--no-words` index's folder
        return f"{folder('sparse_lucene_k128'):.2f}"
    return f"{folder(key):.2f}" if methods[key].get("index_bytes") is not None else "–"


def _sae_label(result: dict) -> str:
    sae = result.get("sae") or {}
    # Results written before SAE relations were recorded came from the previous default SAE, which was
    # trained on the passages of SciFact, NFCorpus and the MS MARCO subset.
    relation = sae.get("relation", "transductive")
    return f"`{sae.get('path', '?')}`, **{relation.upper()}**" + (
        " (it was trained on this collection's passages: what a new corpus gets is in the transfer table below)"
        if relation == "transductive" else "")


def transfer_section(transfer: dict) -> str:
    """Zero-shot, adapted and fitted rows of benchmarks/transfer.py, ratios to dense."""
    lines = ["", "*Older tables, measured before indexes held words (concept-only indexes and the two-index fusion "
             "with BM25):*", "",
             "**Transfer to a corpus the SAE never saw** (leave-one-collection-out; "
             "[transfer.md](benchmarks/results/transfer.md)). Ratios to dense nDCG@10 in the same run; hybrid "
             "and CL-SR+BM25 alpha tuned on pseudo-queries from the corpus (no judgments). *zero-shot*: the "
             "starting SAE as it is; *adapted*: after `clsr adapt-sae`; *fitted*: an SAE trained from scratch "
             "on the corpus (transductive, a ceiling).", "",
             "| collection | SAE | FVU docs | sparse K=64 | sparse K=128 | hybrid K=128 | CL-SR+BM25 (α) "
             "| CL-SR+BM25 (RRF) | adaptation s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for collection in transfer["collections"]:
        for name, row in collection["rows"].items():
            seconds = f"{row['adaptation']['seconds']:.0f}" if "adaptation" in row else "–"
            lines.append(f"| {collection['dataset']} | {name} | {row['fvu_docs']:.3f} "
                         f"| {row['sparse_k64_x_dense']:.3f} | {row['sparse_k128_x_dense']:.3f} "
                         f"| {row['hybrid_k128_x_dense']:.3f} "
                         f"| {row['clsr_bm25_x_dense']:.3f} | {row.get('clsr_bm25_rrf_x_dense', float('nan')):.3f} "
                         f"| {seconds} |")
    lines += ["", "Starting SAEs: " + ", ".join(f"`{name}` = `{path}`" for name, path in transfer["starts"].items())
              + " (`general` has the shipped SAE's weights; `loo` was trained on the previous default's data minus "
                "the collection). Adaptation seconds: 1,500 steps on this machine's 2 cores while another benchmark "
                "shared them, encoding excluded; alone on 2 pinned cores of a Xeon host, SciFact's took 380 s. "
                "CL-SR+BM25 (α) is interpolation with α tuned on pseudo-queries, which are sentences of their "
                "passage and so favour BM25's exact matches (α 0 everywhere: BM25 alone, below it on NFCorpus "
                "through min-max ties); RRF needs no α and is the fusion to use without a tuning split."]
    return "\n".join(lines)


CSR_COLUMNS = (("sparse_k64_x_dense", "sparse K=64"), ("sparse_k128_x_dense", "sparse K=128"),
               ("hybrid_k128_x_dense", "hybrid K=128"), ("clsr_bm25_rrf_x_dense", "CL-SR+BM25 RRF"))


def csr_section(peer: dict) -> str:
    """clsr's SAE trainer against sentence-transformers' CSRLoss (benchmarks/csr_peer.py), and which wins where."""
    lines = ["", f"**clsr's trainer against CSR** (sentence-transformers' `CSRLoss`; [csr-peer.md]"
             f"(benchmarks/results/csr-peer.md)): the same frozen MiniLM, general-English data, {peer['n_latents']:,} "
             f"latents, K={peer['k']} and {peer['steps']} steps for both, scaled down equally for a CPU "
             f"({peer['scale']['steps']:.1%} of the shipped SAE's steps); adapted: {peer['adapt_steps']} more steps "
             "on the collection's own text. Ratios to dense nDCG@10 in one run.", "",
             "| collection | trainer / SAE | FVU docs | " + " | ".join(t for _, t in CSR_COLUMNS)
             + " | train s | adapt s |", "|---" * (len(CSR_COLUMNS) + 5) + "|"]
    wins = {"clsr": [], "csr": []}
    for collection in peer["collections"]:
        rows = collection["rows"]
        for name, row in rows.items():
            lines.append(f"| {collection['dataset']} | {name} | {row['fvu_docs']:.3f} | "
                         + " | ".join(f"{row[k]:.3f}" for k, _ in CSR_COLUMNS)
                         + f" | {row.get('training_s', '–')} | {row.get('adaptation_s', '–')} |")
        for state in ("zero-shot", "adapted"):
            ours, theirs = rows.get(f"clsr/{state}"), rows.get(f"csr/{state}")
            if ours and theirs:
                for key, title in CSR_COLUMNS:
                    margin = ours[key] - theirs[key]
                    wins["clsr" if margin >= 0 else "csr"].append(f"{collection['dataset']} {state} {title} "
                                                                   f"({margin:+.3f})")
    if wins["clsr"] or wins["csr"]:
        verdict = (". So clsr keeps its trainer" if len(wins["clsr"]) > len(wins["csr"])
                   else ". CSR's loss wins more comparisons than clsr's trainer")
        lost = ": CSR wins " + "; ".join(wins["csr"]) if wins["csr"] else ""
        lines += ["", f"clsr's trainer is ahead on {len(wins['clsr'])} of {len(wins['clsr']) + len(wins['csr'])} "
                  f"comparisons (margins in ratio to dense){lost}{verdict}; either SAE indexes through "
                  "`clsr index --sae` ([docs](docs/sentence-transformers.md))."]
    return "\n".join(lines)


def summary(results: dict[str, dict], transfer: dict | None) -> str:
    """"What the table says", every figure computed here from the same JSON as the tables, each labelled by the
    SAE's relation to the collection (zero-shot, adapted, transductive)."""
    lines = ["", "", "**What the tables say** (generated from the same files):", ""]
    for d, result in results.items():
        m, relation = result["methods"], (result.get("sae") or {}).get("relation", "transductive")
        if "words_concepts" not in m:
            continue
        mix, best = m["words_concepts"], max(m["words_only"]["ndcg@10"], m["concepts_only"]["ndcg@10"])
        shares = m["words_concepts_lucene"].get("score_share_top10", {})
        splade = m.get("splade_pp_ed", {}).get("ndcg@10")
        adapted = _adapted(d)
        lines.append(
            f"- {d}, {relation}: words + concepts give {mix['ndcg@10']:.4f}, {mix['ndcg@10'] / best:.3f}x the better "
            f"of words only and concepts only, against {m['rrf_concepts_bm25']['ndcg@10']:.4f} for the two-index "
            f"RRF" + (f" and {splade:.4f} for SPLADE++ ED" if splade else "")
            + (f"; adapted to the corpus first (`--adapt`), {adapted:.4f}" if adapted else "")
            + f". Search p50 at top 1000 is {mix['x_bm25_search_p50']:.2f}x BM25's on {mix['engine']} "
            f"({m['words_concepts_lucene']['x_bm25_search_p50']:.2f}x on Lucene), timed alternately on the same "
            f"queries; the words add {mix.get('words_added_bytes', 0) / 2**20:.2f} MB ("
            f"{(mix.get('words_added_bytes', 0) - mix.get('doc_words_bytes', 0)) / 2**20:.2f} MB of Lucene postings, "
            f"{mix.get('doc_words_bytes', 0) / 2**20:.2f} MB of `doc_words/` for the engines and explanations) "
            f"against BM25's {m['bm25']['index_bytes'] / 2**20:.2f} MB index."
            + (f" Of the top 10's scores, words carry {shares['word']:.1%}, specific concepts "
               f"{shares['specific']:.1%} and broad ones {shares['broad']:.1%}." if shares else ""))
    for collection in (transfer or {}).get("collections", []):
        rows = collection["rows"]
        zero, adapted = rows.get("general/zero-shot"), rows.get("general/adapted")
        if not (zero and adapted):
            continue
        bm25 = collection["bm25_ndcg@10"] / collection["dense_ndcg@10"]
        lines.append(
            f"- {collection['dataset']}, leave-one-out (a corpus the SAE never saw): sparse K=64 / K=128 "
            f"{zero['sparse_k64_x_dense']:.3f}x / {zero['sparse_k128_x_dense']:.3f}x dense zero-shot, "
            f"{adapted['sparse_k64_x_dense']:.3f}x / {adapted['sparse_k128_x_dense']:.3f}x adapted. The hybrid "
            f"K=128 gives {zero['hybrid_k128_x_dense']:.3f}x zero-shot and {adapted['hybrid_k128_x_dense']:.3f}x "
            f"adapted; its dense side alone (the query against decoded codes) gives "
            f"{zero['hybrid_dense_side_x_dense']:.3f}x and {adapted['hybrid_dense_side_x_dense']:.3f}x, so the "
            f"sparse side adds {zero['hybrid_k128_x_dense'] - zero['hybrid_dense_side_x_dense']:+.3f} and "
            f"{adapted['hybrid_k128_x_dense'] - adapted['hybrid_dense_side_x_dense']:+.3f} (alpha "
            f"{zero['hybrid_alpha']} and {adapted['hybrid_alpha']}, tuned on pseudo-queries). CL-SR + BM25 by "
            f"RRF: {zero['clsr_bm25_rrf_x_dense']:.3f}x zero-shot, {adapted['clsr_bm25_rrf_x_dense']:.3f}x "
            f"adapted, where BM25 alone is {bm25:.3f}x dense.")
    lines += ["", "The hybrid is bounded by its dense side, which decodes the same K=128 code: both signals come "
              "from one code, so alpha is tuned near 0 and the sparse side adds little. Fusing with BM25 by RRF "
              "pays where BM25 alone is close to dense or better (1.02-1.05x here); see "
              "[the hybrid fuser](docs/hybrid-and-fusion.md) for when "
              "it does not."]
    return "\n".join(lines)


def _adapted(dataset: str) -> float | None:
    """nDCG@10 of words + concepts at the default mix after adapting the SAE to the corpus (`clsr index --adapt`):
    from benchmarks/results/<dataset>-adapted.json when measured there with words, else from
    `benchmarks/mix_rule.py --sae <adapted SAE>` (mix-rule-<dataset>-adapted.json: the same impacts scored
    exactly in numpy), if either was measured."""
    from clsr.index.mix import DEFAULT_NORMALIZATION, DEFAULT_WORDS_WEIGHT

    path = RESULTS / f"{dataset}-adapted.json"
    row = json.loads(path.read_text())["methods"].get("words_concepts") if path.exists() else None
    if row:
        return row["ndcg@10"]
    path = RESULTS / f"mix-rule-{dataset}-adapted.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())["collections"].get(dataset, {})
    if report.get("relation") != "adapted" or "test" not in report.get("splits", {}):
        return None
    return report["splits"]["test"][DEFAULT_NORMALIZATION][str(DEFAULT_WORDS_WEIGHT)]


def render(results: dict[str, dict], transfer: dict | None) -> str:
    """The whole generated block (without its markers)."""
    block = section(results)
    if transfer is not None:
        block += "\n" + transfer_section(transfer)
    if (RESULTS / "csr-peer.json").exists():
        block += "\n" + csr_section(json.loads((RESULTS / "csr-peer.json").read_text()))
    return block + "\n" + summary(results, transfer)


def load_results() -> tuple[dict[str, dict], dict | None]:
    results = {d: json.loads((RESULTS / f"{d}.json").read_text()) for d in DATASETS if (RESULTS / f"{d}.json").exists()}
    transfer = json.loads((RESULTS / "transfer.json").read_text()) if (RESULTS / "transfer.json").exists() else None
    return results, transfer


def main() -> None:
    results, transfer = load_results()
    if not results:
        sys.exit("no benchmarks/results/<dataset>.json yet; run make bench")
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md lacks the {START} ... {END} markers")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    block = render(results, transfer)
    readme.write_text(f"{before}{START}\n{block}\n{END}{after}")
    print(f"README.md results section rewritten from {', '.join(results)}")


if __name__ == "__main__":
    main()
