"""The dense encoder's backends: numerics against torch fp32, cache keys, manifests, thread pinning."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clsr.data import load_corpus, load_topics
from clsr.encode.dense import (
    DenseEncoder,
    cpu_supports_bf16,
    default_backend,
    encode_corpus,
    encoder_config,
    recorded_backend,
)
from clsr.index import build_dense_index
from clsr.search import DenseSearcher

# Results that depend on encoder numerics: run again under CLSR_DTYPE=bf16 by `make test-bf16`.
pytestmark = pytest.mark.numerics

# Lowest cosine to torch fp32 each backend may give on SciFact passages and queries; 0.999 is the
# issue's gate. The bounds hold on every x86 CPU because none depends on an ISA's rounding:
# - bf16 (torch, OpenVINO): 8 significant bits per weight and activation, whether the CPU computes
#   them natively (AVX512-BF16, AMX) or the runtime upcasts to fp32 (AVX2: OpenVINO then runs fp32);
#   cosine >= 0.9999 on 600 passages, so 0.999 leaves a 10x margin in 1 - cosine.
# - fp32 runtimes (OpenVINO, ONNX Runtime): only summation order differs from torch (~1e-6 relative).
# - onnx-int8: 8-bit per-channel weights and per-tensor activations, computed exactly in int32 on every
#   CPU (u8 x u8 without VNNI, so nothing saturates: clsr.encode.onnx); its error is the rounding's,
#   the same on AVX2 and VNNI (min 0.9918 / 0.9919 on 600 / 200 passages). It misses the gate, which
#   is why it is opt-in; its bound catches a broken quantisation (saturating u8 x s8 on AVX2 gave
#   0.988, per-tensor weight scales 0.88-0.90). The empty text, a degenerate input, gets its own bound:
#   int8 gives it 0.975-0.980.
MIN_COSINE = {"torch-bf16": 0.999, "openvino-bf16": 0.999, "openvino-fp32": 0.99999, "onnx": 0.99999,
              "onnx-int8": 0.99}
MIN_COSINE_EMPTY = {"torch-bf16": 0.999, "openvino-bf16": 0.999, "openvino-fp32": 0.99999, "onnx": 0.99999,
                    "onnx-int8": 0.97}


@pytest.fixture(scope="module")
def texts():
    passages = [d.text for d in load_corpus("scifact")[:6]]
    queries = list(load_topics("scifact", "test").values())[:4]
    return passages + queries + [""]


@pytest.fixture(scope="module")
def encoders():
    config = encoder_config("minilm")
    return {"torch-fp32": DenseEncoder(config, backend="torch", dtype="fp32"),
            "torch-bf16": DenseEncoder(config, backend="torch", dtype="bf16"),
            "openvino-bf16": DenseEncoder(config, backend="openvino", dtype="bf16"),
            "openvino-fp32": DenseEncoder(config, backend="openvino", dtype="fp32"),
            "onnx": DenseEncoder(config, backend="onnx"), "onnx-int8": DenseEncoder(config, backend="onnx-int8")}


@pytest.mark.parametrize("name", list(MIN_COSINE))
def test_backend_stays_close_to_fp32(encoders, texts, name):
    reference = encoders["torch-fp32"].encode(texts)
    vectors = encoders[name].encode(texts)
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (vectors * reference).sum(1)
    assert cosines[:-1].min() > MIN_COSINE[name] and cosines[-1] > MIN_COSINE_EMPTY[name]


def test_encoding_names_backend_and_dtype(encoders):
    from clsr.encode.openvino import runs_bf16

    assert {name: e.encoding for name, e in encoders.items()} == {
        "torch-fp32": {"backend": "torch", "dtype": "fp32"}, "torch-bf16": {"backend": "torch", "dtype": "bf16"},
        # What runs: OpenVINO computes a bf16 hint in fp32 on a CPU without bf16 (AVX2), so it records fp32 there.
        "openvino-bf16": {"backend": "openvino", "dtype": "bf16" if runs_bf16() else "fp32"},
        "openvino-fp32": {"backend": "openvino", "dtype": "fp32"},
        "onnx": {"backend": "onnx", "dtype": "fp32"}, "onnx-int8": {"backend": "onnx-int8", "dtype": "int8"}}


def test_auto_is_openvino_on_the_cpu_and_torch_on_an_accelerator():
    assert default_backend("cpu") == "openvino" and default_backend("cuda") == "torch"
    encoder = DenseEncoder(encoder_config("minilm"))
    expected = os.environ.get("CLSR_DTYPE") or ("bf16" if cpu_supports_bf16() else "fp32")
    if expected == "bf16":
        from clsr.encode.openvino import runs_bf16

        expected = "bf16" if runs_bf16() else "fp32"  # what OpenVINO runs here
    assert encoder.backend == "openvino" and encoder.dtype == expected


def test_openvino_keeps_input_order_across_concurrent_batches(encoders):
    """Many batches run concurrently and finish in any order; each vector must land on its own text's row,
    as the text encoded alone (latency path) gives it."""
    texts = [d.text for d in load_corpus("scifact")[:40]]
    encoder = encoders["openvino-fp32"]
    encoder.batch_size = 4
    try:
        together = encoder.encode(texts)
    finally:
        encoder.batch_size = 32
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose((together * alone).sum(1), 1, atol=1e-5)
    assert (np.argmax(together @ alone.T, axis=1) == np.arange(len(texts))).all()


def test_openvino_error_while_pooling_reaches_the_caller(monkeypatch):
    encoder = DenseEncoder(encoder_config("minilm"), backend="openvino", batch_size=2)
    calls = []

    def failing_pool(hidden, mask):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("pooling failed")
        return DenseEncoder._pool(encoder, hidden, mask)

    monkeypatch.setattr(encoder, "_pool", failing_pool)
    with pytest.raises(RuntimeError, match="pooling failed"):
        encoder.encode([d.text for d in load_corpus("scifact")[:20]])


def test_bad_backend_or_dtype_is_refused():
    with pytest.raises(ValueError, match="backend must be"):
        DenseEncoder(encoder_config("minilm"), backend="tensorrt")
    with pytest.raises(ValueError, match="has no dtype 'bf16'"):
        DenseEncoder(encoder_config("minilm"), backend="onnx", dtype="bf16")


def test_openvino_model_is_converted_once(encoders, monkeypatch):
    from clsr.encode import openvino as openvino_backend

    def no_convert(*args, **kwargs):
        raise AssertionError("converted a cached OpenVINO model again")

    monkeypatch.setattr(openvino_backend, "convert", no_convert)
    again = DenseEncoder(encoder_config("minilm"), backend="openvino", dtype="fp32")
    np.testing.assert_array_equal(again.encode(["bone density"]), encoders["openvino-fp32"].encode(["bone density"]))


def test_onnx_artefacts_are_cached_not_rebuilt(encoders, monkeypatch):
    from clsr.encode import onnx as onnx_backend

    def no_export(*args, **kwargs):
        raise AssertionError("rebuilt a cached ONNX artefact")

    monkeypatch.setattr(onnx_backend, "export", no_export)
    monkeypatch.setattr(onnx_backend, "quantize", no_export)
    again = DenseEncoder(encoder_config("minilm"), backend="onnx-int8")
    np.testing.assert_array_equal(again.encode(["bone density"]), encoders["onnx-int8"].encode(["bone density"]))


def test_int8_form_without_vnni_never_saturates(encoders, texts, monkeypatch):
    """The u8 x u8 form that CPUs without VNNI get holds the int8 bound on every CPU (nothing saturates, so
    no ISA changes its integers), and its weights are u8."""
    import glob

    import onnx

    monkeypatch.setattr("clsr.encode.dense.cpu_supports_vnni", lambda: False)
    encoder = DenseEncoder(encoder_config("minilm"), backend="onnx-int8")
    cosines = (encoder.encode(texts) * encoders["torch-fp32"].encode(texts)).sum(1)
    assert cosines[:-1].min() > MIN_COSINE["onnx-int8"] and cosines[-1] > MIN_COSINE_EMPTY["onnx-int8"]
    (path,) = glob.glob(str(Path(os.environ["CLSR_CACHE"]) / "onnx" / "*" / "model-int8-u8u8.onnx"))
    weights = [t for t in onnx.load(path).graph.initializer if t.name.endswith("_quantized")]
    assert weights and {t.data_type for t in weights} == {onnx.TensorProto.UINT8}


def test_cache_key_differs_per_backend(encoders, tmp_path):
    docs = load_corpus("scifact")[:5]
    entries = {}
    for name in ("torch-fp32", "openvino-fp32", "onnx", "onnx-int8"):
        encode_corpus(encoders[name], docs, cache_dir=tmp_path, progress=False)
        new = set((tmp_path / "embeddings").iterdir()) - set(entries.values())
        assert len(new) == 1, f"{name} reused another backend's cache entry"
        entries[name] = new.pop()
        meta = json.loads((entries[name] / "meta.json").read_text())
        assert (meta["backend"], meta["dtype"]) == (encoders[name].backend, encoders[name].dtype)


def test_manifest_records_backend_and_searcher_encodes_queries_with_it(encoders, tmp_path):
    docs = load_corpus("scifact")[:20]
    onnx = encoders["onnx-int8"]
    encoded = encode_corpus(onnx, docs, cache_dir=tmp_path, progress=False)
    build_dense_index(encoded.ids, encoded.embeddings, tmp_path / "dense", encoder=onnx.config.to_dict(),
                      encoding=onnx.encoding)
    manifest = json.loads((tmp_path / "dense" / "clsr-index.json").read_text())
    assert manifest["encoding"] == {"backend": "onnx-int8", "dtype": "int8"}  # the file as written
    searcher = DenseSearcher(tmp_path / "dense")  # no encoder given: the manifest's backend
    assert searcher.encoder.encoding == onnx.encoding
    query = "vitamin D and bone density"
    np.testing.assert_allclose(searcher.encoder.encode_queries([query]), onnx.encode_queries([query]), atol=1e-6)
    # A passage's own text as the query finds it first. Not at cosine 1: int8 takes one activation scale
    # per batch, so a text encoded alone differs a little from the same text in a batch of 20 (0.996).
    hits = searcher.search(docs[3].text, k=2)
    assert hits[0].docid == docs[3].id and 0.99 < hits[0].score < 1 + 1e-5 and hits[1].score < 0.9


def test_manifests_from_before_backends_mean_torch():
    assert recorded_backend(None) == "torch"  # a manifest written before backends records no encoding
    assert recorded_backend({"backend": "onnx", "dtype": "fp32"}) == "onnx"


def test_torch_encoder_keeps_its_threads_when_faiss_changes_openmp(encoders, monkeypatch):
    """faiss.omp_set_num_threads(1) also sets torch's threads; the encoder must not follow it."""
    import faiss
    import torch

    encoder = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32", threads=2)
    seen = []
    original = encoder._hidden
    monkeypatch.setattr(encoder, "_hidden", lambda texts: (seen.append(torch.get_num_threads()), original(texts))[1])
    before = torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    try:
        assert torch.get_num_threads() == 1  # the shared OpenMP setting the encoder must override
        encoder.encode(["bone density"])
        assert seen == [2] and torch.get_num_threads() == 1  # restored for the caller afterwards
    finally:
        torch.set_num_threads(before)
