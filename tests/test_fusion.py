"""Fusion maths on hand-made runs."""

import pytest

from clsr.fusion import fuse, interpolate, normalize, reciprocal_rank_fusion

SPARSE = {"q1": [("a", 10.0), ("b", 6.0), ("c", 2.0)]}
DENSE = {"q1": [("b", 0.9), ("d", 0.7), ("a", 0.5)]}


def test_normalisations():
    assert normalize([10.0, 6.0, 2.0]) == [1.0, 0.5, 0.0]
    assert normalize([3.0, 3.0]) == [0.0, 0.0]
    assert normalize([1.0, 2.0, 3.0], "zscore") == pytest.approx([-1.224744871, 0.0, 1.224744871])
    with pytest.raises(ValueError, match="normalisation must be"):
        normalize([1.0], "max")


def test_interpolation_with_minmax_and_the_missing_document_rule():
    # sparse normalised: a 1, b .5, c 0 (d missing -> 0); dense: b 1, d .5, a 0 (c missing -> 0).
    fused = interpolate(SPARSE, DENSE, alpha=0.3)["q1"]
    assert [d for d, _ in fused] == ["b", "d", "a", "c"]
    assert [s for _, s in fused] == pytest.approx([0.3 * 0.5 + 0.7 * 1.0, 0.7 * 0.5, 0.3 * 1.0, 0.0])
    # alpha 1 is the sparse run; c and d tie at 0 and are ordered by docid, descending, as trec_eval does.
    assert [d for d, _ in interpolate(SPARSE, DENSE, alpha=1.0)["q1"]] == ["a", "b", "d", "c"]


def test_interpolation_with_zscore():
    z_sparse = dict(zip("abc", normalize([10.0, 6.0, 2.0], "zscore")))
    z_dense = dict(zip("bda", normalize([0.9, 0.7, 0.5], "zscore")))
    fused = dict(interpolate(SPARSE, DENSE, alpha=0.5, normalization="zscore")["q1"])
    assert fused["a"] == pytest.approx(0.5 * z_sparse["a"] + 0.5 * z_dense["a"])
    assert fused["c"] == pytest.approx(0.5 * z_sparse["c"] + 0.5 * min(z_dense.values()))  # c missing from dense
    assert fused["d"] == pytest.approx(0.5 * min(z_sparse.values()) + 0.5 * z_dense["d"])


def test_reciprocal_rank_fusion_and_a_query_in_one_run_only():
    fused = reciprocal_rank_fusion([SPARSE, DENSE, {"q2": [("x", 1.0)]}])
    scores = dict(fused["q1"])
    assert scores == pytest.approx({"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62})
    assert [d for d, _ in fused["q1"]] == ["b", "a", "d", "c"]
    assert fused["q2"] == [("x", 1 / 61)]


def test_fuse_dispatches_and_cuts_to_k():
    assert fuse([SPARSE, DENSE], "rrf", k=2)["q1"] == reciprocal_rank_fusion([SPARSE, DENSE])["q1"][:2]
    with pytest.raises(ValueError, match="exactly two runs"):
        fuse([SPARSE, DENSE, SPARSE], "interpolation")
