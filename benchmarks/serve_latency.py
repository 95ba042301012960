"""How fast does the explorer answer? Latency of `clsr serve` over HTTP on a whole collection, plus screenshots.

    python benchmarks/serve_latency.py --dataset scifact --out benchmarks/results/serve.json [--sae DIR]

Starts `clsr serve` (a separate process, as a user would) on the collection's doc-K 64 concept index
with BM25 and dense indexes beside it, then sends each test query once untimed (warm-up) and once
timed, one request at a time from this process:

* **search**: ``/api/search?k=10``: encode the query, search Lucene, split every hit's score into its
  shared concepts with descriptions (the "search plus explanation" the target is about: < 100 ms p50);
* **steer**: the same query with its second concept boosted x2 (a slider move; the ranking without
  steering is searched too, to say how far hits moved);
* **evidence**: ``/api/evidence`` for the top hit's strongest concept in the query and the passage;
* **compare**: ``/api/compare`` (CL-SR, hybrid, BM25, dense);
* **concept page**: ``/api/concepts/{c}`` for concepts not asked before (five passages with evidence).

With Playwright and /usr/bin/chromium present, it also saves screenshots of the search and concept pages.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness import build_baselines, build_concept_index_for, machine_info, percentile, versions, write_report

from clsr.data import load_topics, resolve
from clsr.interpret.describe import CATALOGUE_NAME, build_catalogue, write_catalogue
from clsr.sae.model import default_sae_path

from provenance import provenance_line, sae_provenance

HERE = Path(__file__).resolve().parent
DOC_K = 64
SCREENSHOT_QUERY = "vitamin D deficiency and bone fractures"


def get(url: str) -> tuple[float, dict]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = json.loads(response.read())
    return (time.perf_counter() - start) * 1000, body


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 2), "p95_ms": round(percentile(values, 0.95), 2),
            "mean_ms": round(sum(values) / max(len(values), 1), 2)}


def screenshots(url: str, out_dir: Path) -> list[str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    if not Path("/usr/bin/chromium").exists():
        return []
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "/")
        page.fill("#query", SCREENSHOT_QUERY)
        page.press("#query", "Enter")
        page.wait_for_selector("#hits .hit")
        page.locator("#hits .hit").first.locator(".chip").first.click()
        page.wait_for_selector("#query-text mark")
        page.screenshot(path=str(out_dir / "explorer-search.png"))
        saved.append("explorer-search.png")
        page.locator("#hits .hit").first.locator(".chip .concept-link").first.click()
        page.wait_for_selector("#concept-title")
        page.wait_for_selector(".passage mark")
        page.screenshot(path=str(out_dir / "explorer-concept.png"))
        saved.append("explorer-concept.png")
        browser.close()
    return saved


def markdown(result: dict) -> str:
    lines = ["# The explorer's latency (`clsr serve`)", "",
             f"{result['dataset']}: {result['queries']} test queries against the doc-K {DOC_K} concept index of "
             f"{result['documents']} passages, over HTTP from a client on the same machine, one request at a time, "
             "after one untimed pass over altered queries (each timed query is new to the server's embedding "
             "cache). Target: search plus explanation under 100 ms p50.", "",
             provenance_line(result["sae"], result["dataset"]), "",
             "| request | n | p50 ms | p95 ms | mean ms |", "|---|---|---|---|---|"]
    for name, s in result["latency"].items():
        lines.append(f"| {name} | {s['n']} | **{s['p50_ms']}** | {s['p95_ms']} | {s['mean_ms']} |")
    lines += ["", f"Server-side time of a search (its `took_ms`): p50 {result['server_search_p50_ms']} ms.", ""]
    if result["screenshots"]:
        lines += ["Screenshots: " + ", ".join(f"[{s}]({s})" for s in result["screenshots"]) + ".", ""]
    machine = result["machine"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, shared with other work).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sae", help="SAE folder (default: the bundled one)")
    parser.add_argument("--describer", choices=["keywords", "evidence"], default="keywords",
                        help="how the index's catalogue is described if it has none yet")
    parser.add_argument("--concept-pages", type=int, default=30)
    parser.add_argument("--queries", type=int, help="time only the first N test queries (default: all)")
    parser.add_argument("--out", default="benchmarks/results/serve.json")
    args = parser.parse_args(argv)
    sae_path = Path(args.sae) if args.sae else default_sae_path()
    source = resolve(args.dataset)
    name = Path(str(source)).name
    baselines = build_baselines(str(source), HERE / "work" / name)
    index_dir = HERE / "work" / name / f"concepts-k{DOC_K}-{sae_path.name}"
    manifest = build_concept_index_for(baselines, index_dir, sae_path, DOC_K, reuse=True)
    if not (index_dir / CATALOGUE_NAME).exists():
        write_catalogue(build_catalogue(index_dir, describer=None if args.describer == "keywords" else "evidence"),
                        index_dir / CATALOGUE_NAME)
    topics = load_topics(source, args.split)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "clsr.interpret", "serve",
                               "--index", str(index_dir), "--port", str(port),
                               "--bm25", str(baselines.bm25_dir), "--dense", str(baselines.dense_dir)],
                              env={**os.environ}, stdout=sys.stderr, stderr=sys.stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                get(url + "/api/info")
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("clsr serve exited")
                time.sleep(0.5)
        queries = list(topics.values())[:args.queries]
        encode = urllib.parse.quote

        def search_url(q: str) -> str:
            return f"{url}/api/search?q={encode(q)}&k=10"

        # Warm-up (Lucene's JIT, the encoder) on altered queries: the explorer caches query embeddings, so the
        # timed pass must meet each test query for the first time, as a user's new query would.
        for q in queries:
            get(search_url(q + " study"))
        search_ms, server_ms, steer_ms, evidence_ms, compare_ms = [], [], [], [], []
        seen_concepts = []
        for fresh in queries:
            ms, body = get(search_url(fresh))
            search_ms.append(ms)
            server_ms.append(body["took_ms"])
            concepts = body["query_concepts"]
            if len(concepts) > 1:
                ms, _ = get(search_url(fresh) + f"&steer={concepts[1]['concept']}%3D2")
                steer_ms.append(ms)
            if body["hits"]:
                top = body["hits"][0]
                concept = top["concepts"][0]["concept"]
                ms, _ = get(f"{url}/api/evidence?concept={concept}&q={encode(fresh)}&docid={encode(top['docid'])}")
                evidence_ms.append(ms)
                if concept not in seen_concepts:
                    seen_concepts.append(concept)
            ms, _ = get(f"{url}/api/compare?q={encode(fresh)}&k=10")
            compare_ms.append(ms)
        page_ms = [get(f"{url}/api/concepts/{c}")[0] for c in seen_concepts[:args.concept_pages]]
        saved = screenshots(url, Path(args.out).parent)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "dataset": name, "split": args.split, "queries": len(queries), "documents": manifest.documents,
              "sae": sae_provenance(sae_path, name),
              "latency": {"search + explanation (k=10)": summary(search_ms),
                          "steered search (slider move)": summary(steer_ms),
                          "word evidence (query + passage)": summary(evidence_ms),
                          "compare (4 methods)": summary(compare_ms), "concept page (first visit)": summary(page_ms)},
              "server_search_p50_ms": round(percentile(server_ms, 0.5), 2), "screenshots": saved,
              "machine": machine_info(), "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
