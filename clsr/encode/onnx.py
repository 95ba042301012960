"""ONNX export (and int8 quantisation) of a dense encoder, cached and built on first use, offline.

The artefacts live under ``$CLSR_CACHE/onnx/<model fingerprint>/`` (chosen by :mod:`clsr.encode.dense`, which
this module does not import) and are never committed:
``model.onnx`` (fp32, the transformer up to its last hidden state) and one int8 file (its MatMuls
dynamically quantised to 8 bits with per-channel weight scales) per kind of CPU:

* ``model-int8-u8s8.onnx`` where the CPU has VNNI: u8 activations x s8 weights, whose products
  ``vpdpbusd`` accumulates in int32;
* ``model-int8-u8u8.onnx`` where it has not (AVX2, AVX-512 without VNNI): u8 x u8. ONNX Runtime's
  u8 x s8 kernel there (``vpmaddubsw``) adds pairs of products into a saturating int16
  (255 x 127 x 2 > 32767), which ONNX Runtime's quantisation docs warn of; on SciFact passages
  it took the min cosine to fp32 from 0.992 to 0.988. u8 x u8 is widened to int16 before its
  products (``vpmaddwd``), so nothing saturates and the result is the VNNI one. The other remedy
  the docs name, ``reduce_range`` (7-bit weights), loses precision everywhere (min 0.9888).
 Each is written to
a temporary file and renamed, so an interrupted build leaves nothing that looks finished.
Pooling and normalisation stay in :class:`clsr.encode.dense.DenseEncoder`, shared by every backend.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

OPSET = 17  # ONNX Runtime 1.2x runs it fully; the legacy exporter's well-trodden opset for BERT models
FP32_FILE = "model.onnx"
INT8_FILES = {True: "model-int8-u8s8.onnx", False: "model-int8-u8u8.onnx"}  # by cpu_supports_vnni()


def _replace_atomically(build, target: Path) -> None:
    """Run ``build(tmp_path)`` and rename the file it writes to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}.onnx")
    try:
        build(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export(model, tokenizer, target: Path) -> None:
    """Export a Hugging Face encoder to ONNX: inputs as the tokenizer names them, batch and length dynamic.

    Output ``last_hidden_state`` (batch, tokens, hidden) float32. Uses the TorchScript exporter
    (``dynamo=False``), which needs neither the network nor onnxscript.
    """
    import torch

    from clsr.encode.tracing import traceable

    wrapped, names, example = traceable(model, tokenizer)

    def build(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(wrapped, example, str(tmp), input_names=names,
                              output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names + ["last_hidden_state"]})

    _replace_atomically(build, target)


def quantize(source: Path, target: Path, *, signed_weights: bool) -> None:
    """Dynamic 8-bit quantisation of every MatMul with per-channel weight scales (ONNX Runtime's quantiser):
    s8 weights with ``signed_weights`` (for VNNI CPUs), else u8 (no saturation without VNNI).

    Activations are quantised (u8) per tensor at run time, so no calibration data is needed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def build(tmp: Path) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser's "consider pre-processing" note, logged to root
        try:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
        finally:
            root.setLevel(level)

    _replace_atomically(build, target)


def require() -> None:
    """Raise ImportError naming the extra when the ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the ONNX encoder backends need {' and '.join(missing)}: pip install 'clsr[onnx]'")


def artefact(model, tokenizer, directory: Path, backend: str, *, vnni: bool = True) -> Path:
    """The ONNX file for ``backend`` ("onnx" or "onnx-int8") in ``directory`` (one per model's weights),
    built from ``model`` if not yet there. ``vnni`` (:func:`clsr.cpu.cpu_supports_vnni`) picks the int8
    form that does not saturate on this CPU.

    Raises ImportError (naming the ``onnx`` extra) when onnx or onnxruntime is not installed.
    """
    require()
    fp32 = directory / FP32_FILE
    if not fp32.exists():
        log.info("exporting the encoder to ONNX under %s (once)", directory)
        export(model, tokenizer, fp32)
    if backend == "onnx":
        return fp32
    int8 = directory / INT8_FILES[vnni]
    if not int8.exists():
        log.info("quantising the ONNX encoder to int8 (%s) under %s (once)", int8.stem.split("-")[-1], directory)
        quantize(fp32, int8, signed_weights=vnni)
    return int8


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one batch at a time: parallelism is inside each operator
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its shape-inference notes are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
