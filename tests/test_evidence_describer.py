"""The evidence describer: labels from word evidence, checked against where concepts fire."""

import numpy as np
import pytest

from clsr.evidence_describer import BROAD, UNCLEAR, count_auc, description_keywords, strong_labels


def test_count_auc_is_the_rank_sum_auc_with_ties_halved():
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    scores, labels = rng.integers(0, 4, 500), rng.random(500) < 0.3
    ranks = rankdata(scores)
    positives, negatives = labels.sum(), (~labels).sum()
    expected = (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    assert count_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert count_auc(np.array([2, 1, 0]), np.array([True, False, False])) == 1.0
    assert count_auc(np.array([1, 1]), np.array([True, True])) is None


def test_strong_labels_are_the_top_decile_of_the_firing_passages():
    activations = np.array([0, 0.5, 0.1, 0.9, 0, 0.3, 0.2, 0.4, 0.6, 0.7, 0.8, 0.05])
    assert np.flatnonzero(strong_labels(activations)).tolist() == [3]  # 10 fire: the top 1
    activations[0] = 0.01  # 11 fire: ceil(1.1) = the top 2
    assert np.flatnonzero(strong_labels(activations)).tolist() == [3, 10]
    assert strong_labels(np.zeros(4)).sum() == 0


def test_keywords_drop_the_markers():
    assert description_keywords(BROAD + "cells, protein") == ["cells", "protein"]
    assert description_keywords(UNCLEAR + "risk") == ["risk"]
    assert description_keywords("bone, fracture, ") == ["bone", "fracture"]
    assert description_keywords("") == []


@pytest.fixture(scope="module")
def describer(slice_concept_index):
    from clsr.describe import KeywordDescriber
    from clsr.evidence import passage_texts
    from clsr.evidence_describer import evidence_describer_for

    texts = passage_texts(slice_concept_index)
    return evidence_describer_for(slice_concept_index, texts, KeywordDescriber(texts.values()).stem, top_passages=5,
                                  dtype="fp32")


def test_labels_report_their_own_auc_and_say_broad_or_unclear(describer):
    df = np.bincount(np.asarray(describer.latents)[np.asarray(describer.activations) > 0], minlength=8192)
    by_df = np.argsort(-df)
    chosen = [int(by_df[0]), int(by_df[1]), int(by_df[200]), int(by_df[400])]
    labels = describer.describe_latents(chosen)
    stems = describer.passage_stems()
    for latent in chosen:
        label = labels[latent]
        assert describer.min_keywords <= len(label["keywords"]) <= describer.max_keywords
        keyword_stems = {describer.stem(k) for k in label["keywords"]}
        scores = np.array([len(keyword_stems & passage) for passage in stems])
        column = describer.activation_column(latent)
        assert label["auc_fires"] == pytest.approx(count_auc(scores, column > 0), abs=1e-4)
        assert label["auc_strong"] == pytest.approx(count_auc(scores, strong_labels(column)), abs=1e-4)
        share = df[latent] / len(stems)
        assert label["df_share"] == pytest.approx(share, abs=1e-4)
        if (label["auc_fires"] + label["auc_strong"]) / 2 < describer.min_auc:
            assert label["kind"] == "unclear" and label["description"].startswith(UNCLEAR)
        elif share >= describer.broad_share:
            assert label["kind"] == "broad" and label["description"].startswith(BROAD)
        else:
            assert label["kind"] == "specific" and label["description"] == ", ".join(label["keywords"])
    assert labels[chosen[0]]["kind"] in {"broad", "unclear"}  # the most frequent concept fires on most passages
