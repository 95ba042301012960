"""The index manifest's record: manifests written by clsr 0.1 (today's main and older) read, round-trip, and
damaged ones fail in one line naming the file and the field."""

import json

import pytest

from clsr.errors import InvalidIndexError
from clsr.index import read_manifest
from clsr.index.manifest import MANIFEST_NAME, HybridAlpha, IndexManifest

# Written by clsr 0.1.0 (main at 35cd1b3), copied from real indexes.
BM25 = {"kind": "bm25", "clsr_version": "0.1.0", "documents": 200, "created": "2026-12-03T19:30:40+00:00",
        "source": "c.jsonl", "k1": 0.9, "b": 0.4, "build_seconds": 2.004}
ENCODER = {"model": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean", "normalize": True,
           "query_prefix": "", "max_length": 256}
DENSE = {"kind": "dense", "clsr_version": "0.1.0", "documents": 5183, "created": "2026-12-03T20:13:28+00:00",
         "source": "/work/shared/data/scifact", "dim": 384, "encoder": ENCODER,
         "encoding": {"backend": "openvino", "dtype": "fp32"}}
CONCEPTS = {
    "kind": "concepts", "clsr_version": "0.1.0", "documents": 1000, "created": "2026-12-03T19:44:53+00:00",
    "source": "c1k.jsonl", "encoder": ENCODER, "encoding": {"backend": "openvino", "dtype": "fp32"},
    "sae": {"name": "minilm-l6-v2-general-topk128-8192",
            "path": "/work/main/clsr/models/minilm-l6-v2-general-topk128-8192",
            "sha256": "f82aae71b9661d4458d0c58561a3a8be4a68b012e291c5908feaab75985fe7a5", "n_latents": 8192,
            "k": 128, "d_in": 384, "adapted_from": None},
    "sae_fit": {"fvu": 0.2194, "reference_fvu": 0.087462, "sample": 1000, "poor_fit": True},
    "doc_k": 128,
    "doc_quantizer": {"rule": "clip(round(activation * scale), 1, 2**bits - 1) for activation > 0",
                      "scale": 747.6758422851562, "bits": 8},
    "query": {"k": 128, "mode": "topk", "quantizer": {
        "rule": "clip(round(activation * scale), 1, 2**bits - 1) for activation > 0; scale = (2**bits - 1) / the "
                "vector's largest activation", "scale": None, "bits": 8}},
    "postings": 128000, "empty_documents": 0, "lucene_bytes": 294150, "doc_codes_bytes": 2312180,
    "timings": {"concepts_s": 0.154, "write_s": 0.109, "lucene_s": 4.39, "doc_codes_s": 0.023}}
TUNED = {**CONCEPTS, "hybrid_alpha": {"alpha": 0.3, "metric": "ndcg@10", "tuned_on": "300 pseudo-queries, seed 0",
                                      "curve": {"0.0": 0.61, "0.3": 0.66, "1.0": 0.64}}}
# Older still: before encoder backends (no "encoding") and before SAE adaptation (no "sae_fit", no "adapted_from").
OLD_DENSE = {k: v for k, v in DENSE.items() if k != "encoding"}
OLD_CONCEPTS = {**{k: v for k, v in CONCEPTS.items() if k not in ("encoding", "sae_fit")},
                "sae": {k: v for k, v in CONCEPTS["sae"].items() if k != "adapted_from"}}


def _write(directory, data):
    directory.mkdir(exist_ok=True)
    (directory / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    return directory


@pytest.mark.parametrize("written", [BM25, DENSE, CONCEPTS, TUNED], ids=["bm25", "dense", "concepts", "tuned"])
def test_todays_manifests_read_and_write_back_unchanged(tmp_path, written):
    manifest = IndexManifest.read(_write(tmp_path / "index", written))
    assert manifest.kind == written["kind"] and manifest.documents == written["documents"]
    assert manifest.format_version == 1
    assert manifest.to_dict() == {**written, "format_version": 1}  # the same fields, in the same order
    assert list(manifest.to_dict()) == [*written, "format_version"]
    (tmp_path / "copy").mkdir()
    manifest.write(tmp_path / "copy")
    assert IndexManifest.read(tmp_path / "copy") == manifest


def test_concept_manifest_reads_as_typed_records(tmp_path):
    manifest = IndexManifest.read(_write(tmp_path / "index", TUNED))
    assert manifest.sae.n_latents == 8192 and manifest.sae.adapted_from is None
    assert manifest.query.k == 128 and manifest.query.quantizer["scale"] is None
    assert manifest.sae_fit.poor_fit is True and manifest.hybrid_alpha == HybridAlpha(
        alpha=0.3, metric="ndcg@10", tuned_on="300 pseudo-queries, seed 0", curve={"0.0": 0.61, "0.3": 0.66,
                                                                                   "1.0": 0.64})
    assert IndexManifest.read(_write(tmp_path / "untuned", CONCEPTS)).hybrid_alpha is None


@pytest.mark.parametrize("written", [OLD_DENSE, OLD_CONCEPTS], ids=["dense", "concepts"])
def test_older_manifests_read_with_later_fields_absent(tmp_path, written):
    manifest = IndexManifest.read(_write(tmp_path / "index", written))
    assert manifest.encoding is None and manifest.sae_fit is None and manifest.hybrid_alpha is None
    assert manifest.sae is None or manifest.sae.adapted_from is None
    (tmp_path / "copy").mkdir()
    manifest.write(tmp_path / "copy")
    assert IndexManifest.read(tmp_path / "copy") == manifest


def test_replace_and_write_record_a_tuned_alpha(tmp_path):
    index = _write(tmp_path / "index", CONCEPTS)
    alpha = TUNED["hybrid_alpha"]
    IndexManifest.read(index).replace(hybrid_alpha=HybridAlpha(**alpha)).write(index)
    assert IndexManifest.read(index).hybrid_alpha == HybridAlpha(**alpha)
    assert read_manifest(index).to_dict() == {**TUNED, "format_version": 1}
    assert not [p for p in index.iterdir() if p.name != MANIFEST_NAME]  # no temporary file left


@pytest.mark.parametrize(("data", "message"), [
    ({**BM25, "colour": "red"}, "unknown field colour"),
    ({k: v for k, v in BM25.items() if k != "documents"}, "missing field documents"),
    ({k: v for k, v in CONCEPTS.items() if k != "sae"}, "missing field sae"),
    ({**CONCEPTS, "sae": {**CONCEPTS["sae"], "colour": 1}}, "unknown field sae.colour"),
    ({**CONCEPTS, "query": {"k": 128, "mode": "topk"}}, "missing field query.quantizer"),
    ({**BM25, "kind": "faiss"}, "unknown index kind 'faiss'"),
    ({**BM25, "format_version": 2}, "format_version 2 is newer"),
])
def test_a_damaged_manifest_is_one_line_naming_file_and_field(tmp_path, data, message):
    index = _write(tmp_path / "index", data)
    with pytest.raises(InvalidIndexError) as error:
        IndexManifest.read(index)
    assert message in str(error.value) and str(index / MANIFEST_NAME) in str(error.value)
    assert "\n" not in str(error.value)


def test_a_manifest_that_is_not_json_is_named(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(InvalidIndexError, match="not JSON"):
        IndexManifest.read(tmp_path)
