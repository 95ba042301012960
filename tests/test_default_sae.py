"""The SAE shipped inside the package: loadable, matched to the default encoder, and faithful."""

import pytest
from harness import sae_fidelity_runs, top_hits

from clsr.evaluate import evaluate
from clsr.sae.model import TopKSae, default_sae_path


@pytest.fixture(scope="module")
def default_sae() -> TopKSae:
    path = default_sae_path()
    assert path is not None, "clsr/sae/models/ lacks the default SAE; run scripts/train_default_sae.sh"
    assert (path / "sae.safetensors").stat().st_size <= 30 * 2**20
    return TopKSae.load_from_disk(path)


def test_it_is_the_documented_model(default_sae, scifact_slice):
    assert (default_sae.config.d_in, default_sae.config.n_latents, default_sae.config.k) == (384, 8192, 128)
    default_sae.check_encoder(scifact_slice.encoder.config.to_dict())


@pytest.mark.slow
def test_it_keeps_retrieval_on_a_scifact_slice(default_sae, scifact_slice):
    s = scifact_slice
    dense = evaluate(top_hits(s.query_vectors @ s.doc_vectors.T, list(s.topics), s.doc_ids, 10), s.qrels,
                     ["ndcg@10"])["ndcg@10"]
    scores = {}
    for k in (64, 128):
        for name, run in sae_fidelity_runs(default_sae, s.query_vectors, s.doc_vectors, list(s.topics), s.doc_ids,
                                           k, depth=10).items():
            scores[name] = evaluate(run, s.qrels, ["ndcg@10"])["ndcg@10"]
    # Measured on this slice when the model was shipped (zero-shot: it never saw SciFact); a damaged or
    # mismatched model falls far below.
    assert dense == pytest.approx(0.8837, abs=0.005)
    assert scores["sparse_k64"] == pytest.approx(0.8133, abs=0.01)
    assert scores["sparse_k128"] == pytest.approx(0.8480, abs=0.01)
    assert scores["reconstructed_k128"] == pytest.approx(0.8408, abs=0.01)


def test_it_never_saw_a_reported_collection():
    from clsr.sae.model import sae_relation, seen_collections

    assert seen_collections(default_sae_path()) == ["general-english"]
    for collection in ("scifact", "nfcorpus", "msmarco-passage/subset-dl19-5k"):
        assert sae_relation(default_sae_path(), collection) == "zero-shot"
