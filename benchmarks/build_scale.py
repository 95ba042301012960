"""A concept build's time, peak memory and sizes as the corpus grows (Step 19): `clsr index --embeddings DIR` on
N-passage corpora, in a child process, from embeddings given as `clsr encode` writes them.

    python benchmarks/build_scale.py --sizes 1000000 --out benchmarks/results/build-scale.json
    python benchmarks/build_scale.py --sizes 2000 --base 300 --out /tmp/build-scale.json   # a smoke run

The corpus is general-English's passages (46,127, the shipped SAE's own training text) repeated with unique ids
(``ID``, ``ID~1``, ``ID~2``, ...), and the embeddings are theirs, encoded by MiniLM fp32 (from the embedding cache
after the first run), each copy r > 0 noisy **in embedding space** as `benchmarks/engines_scale.py` makes its
real codes: ``normalise(e + sigma * g / sqrt(d))`` with Gaussian ``g`` (sigma 0.5: cosine about 0.89 to the
original), so every copy codes as the SAE really codes a passage. ``--base`` takes the first passages only (a
smoke run need not encode all of them). The corpus and the embeddings folder are written a chunk at a time.

Per size: each stage's seconds (the manifest's ``timings``), the child's peak resident memory (``wait4``'s
``ru_maxrss``: the JVM runs inside the process, through pyjnius, so it is counted) and, polled from
``/proc/PID/status`` every 0.2 s, the peaks of its anonymous and file-backed parts (memory-mapped pages count
in the resident memory until handed back, `clsr.index.streaming.release`), and the sizes of the index's parts:
Lucene, ``doc_codes/``, ``doc_words/`` and ``concepts.jsonl``. Writes JSON and a markdown table with the machine and
the versions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from harness import machine_info, versions, write_report

from clsr.cpu import cpu_flags
from clsr.index import directory_bytes

HERE = Path(__file__).resolve().parent
CHUNK = 65_536  # rows of embeddings made at once: 96 MB of float32 at MiniLM's 384 dimensions


def base_passages(base: int | None):
    """(documents, embeddings (n, d) float32, encoder dict, encoding dict): general-English's first ``base``
    passages (all by default) and their MiniLM fp32 embeddings."""
    from clsr.data import load_corpus, resolve
    from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config

    documents = load_corpus(resolve("general-english"))[:base]
    encoder = DenseEncoder(encoder_config("minilm"), dtype="fp32")
    embeddings = np.asarray(encode_corpus(encoder, documents, desc="general-English").embeddings, np.float32)
    return documents, embeddings, encoder.config.to_dict(), encoder.encoding


def write_corpus(documents, size: int, path: Path) -> None:
    """``size`` passages: ``documents`` repeated, copy r > 0 of passage ID under the id ``ID~r``."""
    with open(path, "w", encoding="utf-8") as f:
        for row in range(size):
            copy, doc = divmod(row, len(documents))
            doc = documents[doc]
            f.write(json.dumps({"_id": doc.id + (f"~{copy}" if copy else ""), "title": "", "text": doc.text}) + "\n")


def write_embeddings_folder(documents, embeddings: np.ndarray, size: int, folder: Path, encoder: dict,
                            encoding: dict, sigma: float, seed: int) -> None:
    """The embeddings folder of :func:`write_corpus`'s corpus, as `clsr encode` writes it, made a chunk at a time:
    copy r > 0 is normalise(e + sigma * g / sqrt(d))."""
    from clsr.encode.embeddings import write_embeddings
    from clsr.index.streaming import open_npy

    n, dim = embeddings.shape
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "embeddings.tmp.npy"
    out = open_npy(scratch, np.float32, (size, dim))
    for start in range(0, size, CHUNK):
        stop = min(start + CHUNK, size)
        rows = np.arange(start, stop)
        chunk = embeddings[rows % n].copy()
        noisy = rows >= n
        if noisy.any():
            chunk[noisy] += sigma / math.sqrt(dim) * rng.standard_normal((int(noisy.sum()), dim), dtype=np.float32)
            chunk[noisy] /= np.linalg.norm(chunk[noisy], axis=1, keepdims=True)
        out[start:stop] = chunk
    out.flush()
    del out
    ids = [documents[row % n].id + (f"~{row // n}" if row >= n else "") for row in range(size)]
    write_embeddings(folder, ids, scratch, encoder, encoding)


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process, in bytes ({} once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            values[key] = int(value.split()[0]) * 1024
    return values


def run_build(corpus: Path, embeddings: Path, index: Path, threads: int, extra: list[str]) -> dict:
    """`clsr index --embeddings` in a child process: its wall seconds, peak RSS (``ru_maxrss``), the polled peaks
    of its anonymous and file-backed resident memory, and the polled samples ``(seconds before it ended, VmRSS
    bytes)`` for :func:`stage_peaks`."""
    command = [sys.executable, "-m", "clsr.cli", "index", "--corpus", str(corpus), "--index", str(index),
               "--embeddings", str(embeddings), "--threads", str(threads), "--overwrite", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, "TQDM_DISABLE": "1"})
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            status = _status(child.pid)
            for key, value in status.items():
                peaks[key] = max(peaks[key], value)
            if status:
                samples.append((time.perf_counter(), status["VmRSS"]))
            done.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(child.pid, 0)
    ended = time.perf_counter()
    child.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    poller.join()
    if child.returncode != 0:
        raise SystemExit(f"clsr index failed ({child.returncode}): {' '.join(command)}")
    return {"wall_s": round(ended - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "peak_anon_mb": round(peaks["RssAnon"] / 2**20), "peak_file_mb": round(peaks["RssFile"] / 2**20),
            "samples": [(ended - at, rss) for at, rss in samples]}


def stage_peaks(samples: list[tuple[float, int]], timings: dict[str, float]) -> dict[str, int]:
    """Peak VmRSS (MB) in each stage, the stages placed by walking back from the child's end through the manifest's
    ``timings`` in build order (the last stage ends as the process does, to within the manifest's writing and the
    interpreter's exit); ``setup`` is what came before the first: imports, the corpus's ids, the checks."""
    order = [stage for stage in STAGES if stage in timings and stage != "total_s"]
    bounds, end = {}, 0.0
    for stage in reversed(order):
        bounds[stage] = (end, end + timings[stage])
        end += timings[stage]
    peaks: dict[str, int] = {}
    for before_end, rss in samples:
        stage = next((name for name, (low, high) in bounds.items() if low <= before_end < high), "setup")
        peaks[stage] = max(peaks.get(stage, 0), round(rss / 2**20))
    return {stage: peaks[stage] for stage in ["setup", *order] if stage in peaks}


def measure(size: int, args, documents, embeddings, encoder: dict, encoding: dict, work: Path) -> dict:
    from clsr.index import read_manifest

    folder = work / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    write_corpus(documents, size, folder / "corpus.jsonl")
    write_embeddings_folder(documents, embeddings, size, folder / "emb", encoder, encoding, args.sigma, args.seed)
    extra = (["--no-describe"] if not args.describe else []) + (["--no-tune-alpha"] if not args.tune_alpha else [])
    result = run_build(folder / "corpus.jsonl", folder / "emb", folder / "index", args.threads, extra)
    manifest = read_manifest(folder / "index")
    catalogue = folder / "index" / "concepts.jsonl"
    samples = result.pop("samples")
    row = {"passages": size, **result, "stage_peak_rss_mb": stage_peaks(samples, manifest.timings),
           "timings": manifest.timings, "postings": manifest.postings,
           "lucene_mb": round(manifest.lucene_bytes / 2**20, 1),
           "doc_codes_mb": round(directory_bytes(folder / "index" / "doc_codes") / 2**20, 1),
           "doc_words_mb": round(directory_bytes(folder / "index" / "doc_words") / 2**20, 1)
           if (folder / "index" / "doc_words").exists() else None,
           "concepts_jsonl_mb": round(catalogue.stat().st_size / 2**20, 1) if catalogue.exists() else None,
           "embeddings_mb": round((folder / "emb" / "embeddings.npy").stat().st_size / 2**20, 1)}
    if not args.keep:
        shutil.rmtree(folder)
    return row


STAGES = ("words_s", "concepts_s", "write_s", "lucene_s", "doc_codes_s", "tune_alpha_s", "describe_s", "total_s")


def markdown(result: dict) -> str:
    lines = ["# Concept build at scale (`clsr index --embeddings`)", "",
             f"general-English repeated with noise in embedding space (sigma {result['sigma']}), "
             f"{result['base']} base passages, {result['threads']} Lucene threads; "
             f"{result['machine'].get('cpu')}, {result['machine'].get('cores')} cores.", "",
             "| passages | wall s | peak RSS MB | peak anon MB | peak file MB | " + " | ".join(STAGES)
             + " | Lucene MB | doc_codes MB | doc_words MB | concepts.jsonl MB |",
             "|" + "---|" * (9 + len(STAGES))]
    for row in result["rows"]:
        stages = " | ".join(str(row["timings"].get(stage, "")) for stage in STAGES)
        lines.append(f"| {row['passages']:,} | {row['wall_s']} | {row['peak_rss_mb']} | {row['peak_anon_mb']} | "
                     f"{row['peak_file_mb']} | {stages} | {row['lucene_mb']} | {row['doc_codes_mb']} | "
                     f"{row['doc_words_mb']} | {row['concepts_jsonl_mb']} |")
    lines += ["", "Peak resident memory (MB) by stage, polled every 0.2 s "
              "(`setup`: imports, the corpus's ids, the checks):",
              "", "| passages | " + " | ".join(["setup", *STAGES[:-1]]) + " |", "|" + "---|" * len(STAGES) + "---|"]
    for row in result["rows"]:
        peaks = row["stage_peak_rss_mb"]
        lines.append(f"| {row['passages']:,} | " + " | ".join(str(peaks.get(stage, "")) for stage in
                                                            ["setup", *STAGES[:-1]]) + " |")
    lines += on_paper(result["rows"])
    flags = ", ".join(result.get("cpu_flags", [])) or "not recorded"
    versions_line = ", ".join(f"{name} {version}" for name, version in result["versions"].items())
    lines += ["", f"CPU flags: {flags}. Versions: {versions_line}. Describing {'on' if result['describe'] else 'off'}, "
              f"alpha tuning {'on' if result['tune_alpha'] else 'off'}."]
    return "\n".join(lines) + "\n"


MS_MARCO_PASSAGES = 8_841_823
ON_PAPER = (MS_MARCO_PASSAGES, 100_000_000)


def on_paper(rows: list[dict]) -> list[str]:
    """Markdown lines: each stage's growth between the two largest sizes measured, and each figure carried on to
    MS MARCO's 8.8M and to 100M passages **on paper**, linearly from that growth (value(N) = value(b) + slope x
    (N - b)): a stage that stopped growing (describing past its bound) stays flat, one that grew linearly keeps
    growing so. Nothing here is measured at 8.8M or 100M."""
    if len(rows) < 2:
        return []
    a, b = sorted(rows, key=lambda row: row["passages"])[-2:]
    figures = [(stage, lambda row, stage=stage: row["timings"].get(stage)) for stage in STAGES]
    figures += [(name, lambda row, name=name: row.get(name)) for name in
                ("wall_s", "peak_rss_mb", "peak_anon_mb", "peak_file_mb", "lucene_mb", "doc_codes_mb", "doc_words_mb",
                 "concepts_jsonl_mb")]
    header = f"| figure | {a['passages']:,} | {b['passages']:,} | growth | " + " | ".join(
        f"{n:,} (on paper)" for n in ON_PAPER) + " |"
    lines = ["", f"Growth from {a['passages']:,} to {b['passages']:,} passages, and the same carried on linearly to "
             "MS MARCO's 8,841,823 and to 100M passages **on paper** (not measured; seconds, MB):", "", header,
             "|" + "---|" * (4 + len(ON_PAPER))]
    for name, value in figures:
        low, high = value(a), value(b)
        if low is None or high is None:
            continue
        slope = (high - low) / (b["passages"] - a["passages"])
        carried = " | ".join(f"{high + slope * (n - b['passages']):,.0f}" for n in ON_PAPER)
        growth = f"{high / low:.2f}x" if low else "-"
        lines.append(f"| {name} | {low:,} | {high:,} | {growth} | {carried} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--base", type=int, default=None, help="general-English passages to repeat (default all)")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-describe", dest="describe", action="store_false")
    parser.add_argument("--no-tune-alpha", dest="tune_alpha", action="store_false")
    parser.add_argument("--work", type=Path, default=None,
                        help="where each size's corpus, embeddings and index go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus, embeddings and index")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "build-scale.json")
    parser.add_argument("--report", type=Path, default=None,
                        help="only write the markdown again from this JSON (an earlier run's --out)")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        args.report.with_suffix(".md").write_text(markdown(result))
        return
    documents, embeddings, encoder, encoding = base_passages(args.base)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory() as work:
        rows = []
        for size in args.sizes:
            rows.append(measure(size, args, documents, embeddings, encoder, encoding, Path(work)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "build_scale", "base": len(documents), "sigma": args.sigma, "seed": args.seed,
              "threads": args.threads, "describe": args.describe, "tune_alpha": args.tune_alpha, "rows": rows,
              "machine": machine_info(), "cpu_flags": sorted(cpu_flags()), "versions": versions()}
    write_report(result, args.out, markdown(result))


if __name__ == "__main__":
    main()
