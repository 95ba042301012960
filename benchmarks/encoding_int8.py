"""Can int8 reach the encoding speed goal within cosine 0.999 of fp32? OpenVINO int8 variants, measured.

    pip install nncf   # NNCF, OpenVINO's quantiser: needed here only, not by clsr
    python benchmarks/encoding_int8.py --out benchmarks/results/encoding-int8.json

Every variant is clsr's own OpenVINO conversion of MiniLM (the openvino backend's cached IR)
quantised by NNCF, then run by OpenVINO with bf16 for what stays in floating point; the reference
row is the openvino backend itself (bf16). Variants:

* ``static-int8``: NNCF post-training quantisation of every MatMul (``ModelType.TRANSFORMER``:
  SmoothQuant, per-channel weights, per-tensor activation scales calibrated once).
* ``static-int8 keep X``: the same with the MatMuls matching X left in bf16 (NNCF's ignored scope).
* ``static-int8 only X``: only the MatMuls matching X in int8.
* ``int8-weights``: int8 weights (per channel, symmetric) with bf16 activations: what weight
  rounding alone costs.

Calibration uses passages of ``--calibration`` (default general-english, never an evaluation
collection), so the figures are zero-shot for the timed collection. Speed is measured
interleaved (every variant encodes each round in turn), on the same passages, two threads by
default. Writes JSON plus a markdown table beside it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import numpy as np
from harness import machine_info, versions, write_report

from clsr.cpu import reported_flags
from clsr.data import load_corpus, resolve
from clsr.encode.dense import DenseEncoder, encoder_config

HERE = Path(__file__).resolve().parent
# Matrix products of a BERT layer, by their node names in the OpenVINO conversion (PyTorch frontend).
GROUPS = {"qkv": r".*attention\.self\.(query|key|value)/aten::linear/MatMul",
          "scores": r".*attention\.self/aten::scaled_dot_product_attention/.*",
          "attention-output": r".*attention\.output\.dense/aten::linear/MatMul",
          "ffn-up": r".*intermediate\.dense/aten::linear/MatMul",
          "ffn-down": r".*layer\.\d+\.output\.dense/aten::linear/MatMul"}


def variants() -> dict[str, dict]:
    """name → NNCF quantize() arguments (None = weight compression only)."""
    out = {"static-int8": {}, "static-int8 keep scores": {"keep": ["scores"]},
           "static-int8 keep scores+ffn-down": {"keep": ["scores", "ffn-down"]}}
    for group in ("qkv", "attention-output", "ffn-up"):
        out[f"static-int8 only {group}"] = {"keep": [g for g in GROUPS if g != group]}
    out["int8-weights"] = None
    return out


def quantized(model, calibration: list[dict], spec: dict | None):
    import nncf

    if spec is None:
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    scope = nncf.IgnoredScope(patterns=[GROUPS[g] for g in spec.get("keep", [])], validate=False)
    return nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=sum(len(b["input_ids"]) for b in calibration), ignored_scope=scope)


def measure(dataset: str, passages: int, rounds: int, calibration_source: str, calibration_count: int,
            threads: int, chosen: list[str] | None = None) -> dict:
    import openvino as ov

    from clsr.encode import openvino as openvino_backend

    corpus = load_corpus(resolve(dataset))
    texts = [d.text for d in corpus[:passages or len(corpus)]]
    config = encoder_config("minilm")
    reference = DenseEncoder(config, backend="torch", dtype="fp32", threads=threads)
    fp32 = reference.encode_documents(texts)
    base = DenseEncoder(config, backend="openvino", dtype="bf16", threads=threads)
    tokenizer = base.tokenizer
    calibration_texts = [d.text for d in load_corpus(resolve(calibration_source))[:calibration_count]]
    calibration = []
    for start in range(0, len(calibration_texts), 16):
        tokens = tokenizer(calibration_texts[start:start + 16], padding=True, truncation=True,
                           max_length=config.max_length, return_tensors="np")
        calibration.append({name: tokens[name].astype(np.int64) for name in base.openvino.input_names})

    encoders = {"openvino-bf16 (clsr default)": base}
    quantise_s = {}
    for name, spec in variants().items():
        if chosen and name not in chosen:
            continue
        start = time.perf_counter()
        model = quantized(base.openvino.core.read_model(str(base.openvino.path)), calibration, spec)
        quantise_s[name] = round(time.perf_counter() - start, 1)
        encoder = DenseEncoder(config, backend="openvino", dtype="bf16", threads=threads)
        encoder.openvino = openvino_backend.Runtime(model, threads, "bf16")
        encoders[name] = encoder
    for encoder in encoders.values():
        encoder.encode_documents(texts[:64])  # warm-up: compilation, first-call allocations

    names = list(encoders)
    parts = {n: [] for n in names}
    wall = dict.fromkeys(names, 0.0)
    load_before = os.getloadavg()
    for r, chunk in enumerate(np.array_split(np.arange(len(texts)), rounds)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            parts[name].append(encoders[name].encode_documents([texts[i] for i in chunk]))
            wall[name] += time.perf_counter() - start
    load_after = os.getloadavg()
    rows = {}
    first = names[0]
    for name in names:
        vectors = np.concatenate(parts[name])
        cosine = (vectors * fp32).sum(1)
        rows[name] = {"passages_per_s": round(len(texts) / wall[name], 2),
                      "speed_vs_default": round(wall[first] / wall[name], 3),
                      "cosine_min": round(float(cosine.min()), 5), "cosine_mean": round(float(cosine.mean()), 6),
                      "meets_0.999": bool(cosine.min() >= 0.999), "below_0.999": int((cosine < 0.999).sum()),
                      "quantise_s": quantise_s.get(name)}
    import nncf

    return {"dataset": dataset, "passages": len(texts), "rounds": rounds, "threads": threads,
            "calibration": {"source": calibration_source, "passages": len(calibration_texts)},
            "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
            "cpu_flags": reported_flags(),
            "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "variants": rows, "machine": machine_info(),
            "versions": {**versions(), "openvino": ov.__version__, "nncf": nncf.__version__}}


def markdown(result: dict) -> str:
    load = result["load_average"]
    lines = [f"# int8 encoding with OpenVINO: {result['dataset']}, {result['passages']} passages, MiniLM, "
             f"{result['threads']} threads", "",
             f"CPU: {result['machine']['cpu']} (flags: {', '.join(result['cpu_flags']) or 'none listed'}); "
             "calibration: "
             f"{result['calibration']['passages']} {result['calibration']['source']} passages (zero-shot for "
             f"{result['dataset']}); load average {'/'.join(map(str, load['before']))} before, "
             f"{'/'.join(map(str, load['after']))} after; {result['measured']}.", "",
             "| variant | passages/s | × openvino-bf16 | cosine to torch fp32 min / mean "
             "| within 0.999 (passages below) |",
             "|---|---|---|---|---|"]
    for name, r in result["variants"].items():
        lines.append(f"| {name} | {r['passages_per_s']:.1f} | {r['speed_vs_default']:.2f} "
                     f"| {r['cosine_min']:.5f} / {r['cosine_mean']:.5f} | {'yes' if r['meets_0.999'] else 'no'} "
                     f"({r.get('below_0.999', '-')}) |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--passages", type=int, default=400,
                        help="passages timed per variant (default 400; 0 = the whole corpus)")
    parser.add_argument("--variants", nargs="+", choices=list(variants()),
                        help="the int8 variants to run (default: all); openvino-bf16 always runs")
    parser.add_argument("--rounds", type=int, default=4, help="interleaving rounds (default 4)")
    parser.add_argument("--calibration", default="general-english", help="collection whose passages calibrate int8")
    parser.add_argument("--calibration-passages", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "encoding-int8.json")
    args = parser.parse_args()
    result = measure(args.dataset, args.passages, args.rounds, args.calibration, args.calibration_passages,
                     args.threads, args.variants)
    write_report(result, args.out, markdown(result))


if __name__ == "__main__":
    main()
