import numpy as np
import pytest
import torch

from clsr.index.concepts import Quantizer, concept_latent, concept_term, dot, impact_vectors
from clsr.sae.config import SaeConfig
from clsr.sae.model import TopKSae


def test_term_naming_round_trips():
    assert concept_term(1234) == "c1234" and concept_latent("c1234") == 1234
    with pytest.raises(ValueError, match="not a concept term"):
        concept_latent("x12")


def test_nothing_that_survives_top_k_is_quantised_to_zero():
    q = Quantizer(scale=10.0, bits=8)
    np.testing.assert_array_equal(q.quantize([0.0, 1e-6, 0.04, 0.06, 1.0, 30.0, 1e9]), [0, 1, 1, 1, 10, 255, 255])
    assert Quantizer.from_dict(q.to_dict()) == q


def test_queries_are_quantised_per_vector_to_the_full_range():
    q = Quantizer(scale=None, bits=8)
    impacts = q.quantize([[0.5, 0.25, 0.0, 0.001], [2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(impacts, [[255, 128, 0, 1], [255, 128, 0, 0], [0, 0, 0, 0]])
    assert Quantizer.from_dict(q.to_dict()) == q and "largest activation" in q.to_dict()["rule"]


def test_scores_must_fit_float32_exactly():
    from clsr.index.concepts import check_exact_scores

    check_exact_scores(128, Quantizer(1.0, 8), Quantizer(None, 8))  # 128 * 255 * 255 < 2**24
    with pytest.raises(ValueError, match="beyond 2\\*\\*24"):
        check_exact_scores(128, Quantizer(1.0, 10), Quantizer(None, 8))


def test_fit_maps_the_percentile_to_the_top_impact():
    activations = np.linspace(0, 2.0, 2001)
    q = Quantizer.fit(activations, bits=8, percentile=100)
    assert q.scale == pytest.approx(255 / 2.0)
    assert q.quantize([2.0])[0] == 255


def test_impact_vectors_and_their_dot_product():
    values = np.array([[0.5, 0.25, 0.0]], np.float32)
    indices = np.array([[7, 3, 9]])
    (vector,) = impact_vectors(values, indices, Quantizer(scale=4.0))
    assert vector == {"c7": 2, "c3": 1}
    assert dot(vector, {"c7": 3, "c9": 5}) == 6


def test_projected_query_weights_are_the_positive_projections_on_every_atom():
    from clsr.index.concepts import ConceptEncoder

    torch.manual_seed(0)
    sae = TopKSae(SaeConfig(16, 64, 8))

    class FakeDense:  # only what ConceptEncoder reads; the SAE has no encoder constraint
        config = type("C", (), {"to_dict": lambda self: {}, "model": "fake"})()
        dim = 16

    encoder = ConceptEncoder(FakeDense(), sae, query_k=64, query_mode="projected",
                             doc_quantizer=Quantizer(1.0), query_quantizer=Quantizer(1.0))
    rng = np.random.default_rng(0)
    queries, docs = rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    q_values, q_indices = encoder.query_codes(queries)
    d_values, d_indices = encoder.document_codes(docs)
    projected = np.zeros((5, 64))
    np.put_along_axis(projected, q_indices, q_values, 1)
    codes = np.zeros((50, 64))
    np.put_along_axis(codes, d_indices, d_values, 1)
    direct = queries @ sae.W_dec.detach().numpy().T
    # With every concept kept, projection scores are max(0, q.atom) . z_d exactly.
    np.testing.assert_allclose(projected @ codes.T, np.maximum(direct, 0) @ codes.T, rtol=1e-5, atol=1e-5)


def test_steering_edits_query_codes():
    from clsr.index.concepts import parse_steering, steer_codes

    steering = parse_steering(["c3=2", "c11=1.0"], ["c7"])
    assert steering == {3: 2.0, 11: 1.0, 7: 0.0}
    values, indices = steer_codes(np.array([[0.5, 0.25, 0.0]]), np.array([[7, 3, 9]]), steering)
    # c7 suppressed; c3 doubled; c11, absent, enters at the row's mean activation (0.375) x 1.
    np.testing.assert_allclose(values, [[0.5, 0.375]])
    np.testing.assert_array_equal(indices, [[3, 11]])
    with pytest.raises(ValueError, match="--boost 'x3=2'"):
        parse_steering(["x3=2"])
