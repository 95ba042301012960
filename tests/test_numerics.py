"""Numerics that depend on neither the batch nor the CPU (issue 30).

A query's concepts must be the same alone (explain, the explorer) and in any batch (a run), whatever the
backend and dtype; and an index's queries get the backend and dtype its documents got, not whatever "auto"
means on the CPU that searches it. These run twice in CI: as they are, and under CLSR_DTYPE=bf16
(`make test-bf16`), where auto means bf16 as on an AVX512-BF16 or AMX CPU (torch emulates bf16 where the CPU
lacks it; OpenVINO then runs fp32 and says so).
"""

import numpy as np
import pytest

from clsr.encode.dense import DenseEncoder, encoder_config, query_encoding, resolve_encoding
from clsr.index.concepts import ConceptEncoder
from clsr.sae.model import TopKSae, default_sae_path

pytestmark = pytest.mark.numerics


def _mixed_queries(scifact_slice) -> list[str]:
    """Queries of very different lengths: SciFact claims, one word, and whole passages used as long queries
    (padded batches are where the rounding moved)."""
    claims = list(scifact_slice.topics.values())[:12]
    passages = [d.text for d in scifact_slice.documents[:6]]
    return [claims[0], "dna", *passages[:3], *claims[1:8], "vitamin D", *passages[3:], *claims[8:]]


@pytest.mark.parametrize("backend,dtype", [("openvino", "fp32"), ("openvino", "bf16"), ("torch", "fp32"),
                                           ("torch", "bf16"), ("onnx", "fp32")])
def test_a_querys_codes_alone_equal_its_codes_in_a_batch_of_mixed_lengths(scifact_slice, backend, dtype):
    dense = DenseEncoder(encoder_config("minilm"), backend=backend, dtype=dtype)
    encoder = ConceptEncoder(dense, TopKSae.load_from_disk(default_sae_path()), query_k=128)
    queries = _mixed_queries(scifact_slice)
    batch = encoder.encode_queries(queries)
    alone = [encoder.encode_queries([query])[0] for query in queries]
    assert alone == batch  # exact integer impacts, concept for concept
    reordered = encoder.encode_queries(queries[::-1])[::-1]  # other neighbours, other padding
    assert reordered == batch
    # The dense vectors themselves are bit-identical, not merely close.
    embeddings = dense.encode_queries(queries)
    np.testing.assert_array_equal(np.stack([dense.encode_queries([q])[0] for q in queries[:5]]), embeddings[:5])


def test_projected_query_codes_are_batch_invariant(scifact_slice):
    dense = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32")
    encoder = ConceptEncoder(dense, TopKSae.load_from_disk(default_sae_path()), query_k=200, query_mode="projected")
    queries = _mixed_queries(scifact_slice)
    embeddings = dense.encode_queries(queries)
    values, latents = encoder.query_codes(embeddings)
    for row in range(len(queries)):
        alone_values, alone_latents = encoder.query_codes(embeddings[row:row + 1])
        np.testing.assert_array_equal(alone_values[0], values[row])
        np.testing.assert_array_equal(alone_latents[0], latents[row])


def test_auto_follows_clsr_dtype_and_the_recorded_encoding_wins(monkeypatch):
    monkeypatch.setenv("CLSR_DTYPE", "bf16")
    assert resolve_encoding("torch", "auto") == ("torch", "bf16")
    monkeypatch.setenv("CLSR_DTYPE", "fp32")
    assert resolve_encoding("torch", "auto") == ("torch", "fp32")
    assert resolve_encoding("torch", "bf16") == ("torch", "bf16")  # an explicit dtype is never overridden
    monkeypatch.setenv("CLSR_DTYPE", "fp16")
    with pytest.raises(ValueError, match="CLSR_DTYPE='fp16': expected one of bf16, fp32"):
        resolve_encoding("torch", "auto")
    monkeypatch.setenv("CLSR_DTYPE", "bf16")
    # An index's queries: its backend and dtype unless the user says otherwise.
    assert query_encoding({"backend": "torch", "dtype": "fp32"}) == ("torch", "fp32")
    assert query_encoding({"backend": "torch", "dtype": "fp32"}, dtype="bf16") == ("torch", "bf16")
    assert query_encoding({"backend": "onnx-int8", "dtype": "int8"}) == ("onnx-int8", "auto")
    assert query_encoding({"backend": "onnx-int8", "dtype": "int8"}, backend="torch") == ("torch", "auto")
    assert query_encoding(None) == ("torch", "auto")  # built before clsr recorded an encoding


def test_openvino_records_the_dtype_it_runs(monkeypatch):
    from clsr.encode import openvino

    encoder = DenseEncoder(encoder_config("minilm"), backend="openvino", dtype="bf16")
    assert encoder.dtype == ("bf16" if openvino.runs_bf16() else "fp32")
    assert encoder.openvino.config["INFERENCE_PRECISION_HINT"] == ("bf16" if encoder.dtype == "bf16" else "f32")


def test_a_torch_fp32_index_searched_where_auto_means_bf16_gives_the_fp32_scores(tmp_path, scifact_slice,
                                                                                 monkeypatch):
    """The index records torch fp32; a searcher on a CPU whose auto is bf16 (forced here) must still encode its
    queries in fp32, so Lucene's scores are the fp32 codes' integer dot products."""
    from clsr.index import build_concept_index
    from clsr.index.concepts import dot
    from clsr.search import ClsrSearcher

    fp32 = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32")
    documents = scifact_slice.documents[:80]
    sae = TopKSae.load_from_disk(default_sae_path())
    build_concept_index([d.id for d in documents], fp32.encode_documents([d.text for d in documents]),
                        tmp_path / "index", sae=sae, sae_path=default_sae_path(), encoder=fp32.config.to_dict(),
                        encoding=fp32.encoding, doc_k=64, progress=False)
    monkeypatch.setenv("CLSR_DTYPE", "bf16")
    searcher = ClsrSearcher(tmp_path / "index")
    assert searcher.concept_encoder.dense.encoding == {"backend": "torch", "dtype": "fp32"}

    reference = ConceptEncoder(fp32, sae, query_k=searcher.concept_encoder.query_k)
    queries = list(scifact_slice.topics.values())[:10]
    for query, vector in zip(queries, reference.encode_queries(queries)):
        expected = {d.id: dot(vector, searcher.doc_vector(d.id)) for d in documents}
        hits = searcher.search(query, k=len(documents))
        assert {h.docid: int(h.score) for h in hits} == {d: s for d, s in expected.items() if s > 0}


def test_a_search_alone_equals_the_same_query_in_a_run(slice_concept_index, scifact_slice):
    """What explain and the explorer show (one query) is what the run holds (many queries at once)."""
    from clsr.search import ClsrSearcher

    searcher = ClsrSearcher(slice_concept_index)
    topics = dict(list(scifact_slice.topics.items())[:20])
    topics["long"] = scifact_slice.documents[0].text  # a passage as a long query, as ArguAna's
    run = searcher.batch_search(topics, k=50, batch_size=8)
    for qid, text in topics.items():
        alone = searcher.search(text, k=50)
        assert [(h.docid, h.score) for h in alone] == [(h.docid, h.score) for h in run[qid]], qid
