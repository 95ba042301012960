"""clsr and sentence-transformers' SparseEncoder (CSR), both ways: an exported SAE gives clsr's codes, and a CSR
model's concept index scores exactly its own encode_query . encode_document after quantisation."""

import json
import socket

import numpy as np
import pytest
import torch

from clsr.cli import main as clsr
from clsr.data import load_corpus, load_topics
from clsr.encode.dense import DenseEncoder, encoder_config
from clsr.index.concepts import Quantizer
from clsr.index.manifest import IndexManifest
from clsr.sae.model import TopKSae, default_sae_path
from clsr.sae.sentence_transformers import folder_checksum

# Results that depend on encoder numerics: run again under CLSR_DTYPE=bf16 by `make test-bf16`.
pytestmark = pytest.mark.numerics

pytest.importorskip("sentence_transformers")
from sentence_transformers import SparseEncoder  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer  # noqa: E402
from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder  # noqa: E402

# Activations are dot products of 384 fp32 terms of size <= ~1: fp32 rounding (2**-24 relative per term) keeps
# two computations of the same map within ~1e-5 of each other whatever the kernels (AVX2, AVX-512, AMX fp32).
ATOL = 1e-5


@pytest.fixture(scope="module")
def texts(shared_data):
    passages = [d.text for d in load_corpus("scifact")[:40]]
    queries = list(load_topics("scifact", "test").values())[:20]
    return passages, queries


@pytest.fixture
def offline(monkeypatch):
    """No network: HF offline, and any socket connection fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _dense(rows: list) -> np.ndarray:
    return torch.stack([r.to_dense() if r.is_sparse else r for r in rows]).numpy()


def _codes_as_dense(values: np.ndarray, latents: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(values), width), np.float32)
    np.put_along_axis(out, latents.astype(np.int64), values, axis=1)
    return out


def test_export_gives_clsrs_codes_on_passages_and_queries_offline(tmp_path, texts, offline):
    passages, queries = texts
    output = tmp_path / "exported"
    clsr(["export", "sentence-transformers", "--sae", str(default_sae_path()), "--output", str(output),
          "--doc-k", "64", "--query-k", "32"])
    model = SparseEncoder(str(output), local_files_only=True)  # network off: it must load from the folder alone
    assert model.max_active_dims == 64 and model[-1].k == 64
    st_docs = model.encode_document(passages, convert_to_sparse_tensor=False).numpy()
    st_queries = model.encode_query(queries, max_active_dims=32, convert_to_sparse_tensor=False).numpy()

    sae = TopKSae.load_from_disk(default_sae_path())
    dense = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32")
    clsr_docs = _codes_as_dense(*sae.encode_numpy(dense.encode_documents(passages), 64), sae.config.n_latents)
    clsr_queries = _codes_as_dense(*sae.encode_numpy(dense.encode_queries(queries), 32), sae.config.n_latents)
    for st, ours, k in ((st_docs, clsr_docs, 64), (st_queries, clsr_queries, 32)):
        assert [set(np.flatnonzero(row)) for row in st] == [set(np.flatnonzero(row)) for row in ours]
        assert ((st > 0).sum(axis=1) == k).all()  # k positive activations each (no ties at zero here)
        np.testing.assert_allclose(st, ours, rtol=0, atol=ATOL)

    record = json.loads((output / "clsr_export.json").read_text())
    assert (record["doc_k"], record["query_k"], record["sae"]["n_latents"]) == (64, 32, 8192)
    card = (output / "README.md").read_text()
    assert "does not reproduce clsr's reconstructions" in card and "max_active_dims=32" in card
    assert "general-english" in card or "trained on:" in card


def _tiny_csr(folder, n_latents: int = 1024, k: int = 32) -> None:
    """A CSR model built with sentence-transformers' own modules, on MiniLM: the default SAE's first 1024 latents
    as its encoder, and its decoder tied, as CSR's is."""
    from clsr.encode.dense import bundled_minilm_dir

    sae = TopKSae.load_from_disk(default_sae_path())
    transformer = Transformer(bundled_minilm_dir(), max_seq_length=256)
    module = SparseAutoEncoder(input_dim=384, hidden_dim=n_latents, k=k)
    with torch.no_grad():
        module.encoder.weight.copy_(sae.encoder.weight[:n_latents])
        module.latent_bias.copy_(sae.encoder.bias[:n_latents])
        module.pre_bias.copy_(sae.b_dec)
    SparseEncoder(modules=[transformer, Pooling(384, pooling_mode="mean"), Normalize(), module]).save(
        str(folder), create_model_card=False)


def test_a_csr_models_concept_index_scores_its_own_dot_products(tmp_path, shared_data):
    from clsr.search import ClsrSearcher

    csr = tmp_path / "csr"
    _tiny_csr(csr)
    # 40 passages: every score below is checked exactly against all of them, whatever their number.
    documents = load_corpus("scifact")[:40]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
    index = tmp_path / "index"
    # Concepts only: the scores below are the model's own dot products (words would add BM25 weights to them).
    # No describing: the catalogue is not what this test checks (test_sae_adaptation describes with an SAE that,
    # like this converted one, the index keeps in its sae/).
    clsr(["index", "--sae", str(csr), "--corpus", str(corpus), "--index", str(index), "--no-tune-alpha",
          "--no-describe", "--encoder-backend", "torch", "--dtype", "fp32", "--no-words"])

    manifest = IndexManifest.read(index)
    assert manifest.sae.source == {"format": "sentence-transformers", "path": str(csr.resolve()),
                                   "sha256": folder_checksum(csr)}
    assert manifest.encoder["model"] == str(csr.resolve()) and manifest.sae.name == "sae"
    assert (manifest.sae.n_latents, manifest.sae.k, manifest.doc_k) == (1024, 32, 32)

    model = SparseEncoder(str(csr), local_files_only=True)
    texts, ids = [d.text for d in documents], [d.id for d in documents]
    # The index stores activations as float16 (doc_codes/) and quantises its impacts from those.
    docs = model.encode_document(texts, convert_to_sparse_tensor=False).numpy().astype(np.float16).astype(np.float32)
    queries = list(load_topics("scifact", "test").values())[:15]
    query_codes = model.encode_query(queries, convert_to_sparse_tensor=False).numpy()

    # The tied decoder gives the index's reconstructions (the hybrid's dense side): sentence-transformers' decode.
    with torch.inference_mode():
        decoded = model[-1].decode(torch.from_numpy(docs)).numpy()
    searcher = ClsrSearcher(index)
    np.testing.assert_allclose(searcher.reconstructions(ids), decoded, rtol=0, atol=ATOL)

    doc_quantizer = Quantizer.from_dict(manifest.doc_quantizer)
    query_quantizer = Quantizer.from_dict(manifest.query.quantizer)
    doc_impacts = doc_quantizer.quantize(docs)
    for row, docid in enumerate(ids[:20]):  # the index holds sentence-transformers' codes, quantised
        assert searcher.doc_vector(docid) == {f"c{i}": int(doc_impacts[row, i]) for i in np.flatnonzero(docs[row])}
    for query, codes in zip(queries, query_codes):
        impacts = query_quantizer.quantize(codes[None])[0]
        expected = {ids[row]: int(doc_impacts[row] @ impacts) for row in range(len(ids))}
        hits = searcher.search(query, k=len(ids))
        assert {hit.docid: int(hit.score) for hit in hits} == {d: s for d, s in expected.items() if s > 0}
        ranking = sorted((d for d, s in expected.items() if s > 0), key=lambda d: (-expected[d], d))
        assert [h.docid for h in sorted(hits, key=lambda h: (-h.score, h.docid))] == ranking


def test_a_folder_that_is_not_a_csr_model_is_refused_in_one_line(tmp_path, shared_data):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "a passage"}\n')
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "weights.bin").write_bytes(b"\0")
    (notes / "readme.txt").write_text("hello")
    with pytest.raises(SystemExit) as refused:
        clsr(["index", "--sae", str(notes), "--corpus", str(corpus), "--index", str(tmp_path / "a")])
    message = str(refused.value)
    assert "neither a clsr SAE" in message and "it holds readme.txt, weights.bin" in message
    assert "\n" not in message.strip() and not (tmp_path / "a").exists()

    splade = tmp_path / "splade"
    splade.mkdir()
    (splade / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.modules.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.modules.SpladePooling"}]))
    with pytest.raises(SystemExit) as refused:
        clsr(["index", "--sae", str(splade), "--corpus", str(corpus), "--index", str(tmp_path / "b")])
    message = str(refused.value)
    assert "modules.json" in message and "last module is SpladePooling" in message and "not a CSR model" in message
    assert not list(tmp_path.glob(".b*"))  # the conversion folder went with the failed build


def test_without_sentence_transformers_the_export_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from clsr.errors import ClsrError
    from clsr.sae.sentence_transformers import export_sparse_encoder

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ClsrError, match=r"pip install 'clsr\[sentence-transformers\]'$"):
        export_sparse_encoder(tmp_path / "out", sae_path=default_sae_path(), encoder=encoder_config("minilm"))
