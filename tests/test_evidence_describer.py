"""The evidence describer: labels from word evidence, checked against where concepts fire."""

import copy
from collections import Counter, defaultdict

import numpy as np
import pytest

from clsr.interpret.describers import (
    BROAD,
    UNCLEAR,
    EmbeddingSimulator,
    EvidenceDescriber,
    choose_words,
    choose_words_both,
    count_auc,
    description_keywords,
    normal_cdf,
    parse_description,
    rank_aucs,
    strong_labels,
    weighted_count_aucs,
)


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
    assert description_keywords(BROAD + "cells, protein; not: diet, survey") == ["cells", "protein"]
    assert parse_description(BROAD + "cells, protein; not: diet, survey") == (["cells", "protein"], ["diet", "survey"])
    assert parse_description("bone") == (["bone"], [])


def test_rank_aucs_match_the_rank_sum_auc_and_count_auc():
    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    scores, labels = rng.normal(size=400).round(1), rng.random(400) < 0.4  # rounded: many ties
    positives, negatives = labels.sum(), (~labels).sum()
    expected = (rankdata(scores)[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    assert rank_aucs(scores, [labels, ~labels]) == pytest.approx([expected, 1 - expected], abs=1e-12)
    counts = rng.integers(0, 3, 400)
    assert rank_aucs(counts, [labels])[0] == pytest.approx(count_auc(counts, labels), abs=1e-12)
    assert rank_aucs(np.array([0.2, 0.1]), [np.array([True, True])]) == [None]


# A three-dimensional "encoder": fruit words point one way, car words another, anything else nowhere.
VECTORS = {"apple": [1, 0, 0], "fruit": [0.8, 0.6, 0], "car": [0, 1, 0], "engine": [0, 0.6, 0.8]}


def encode(texts):
    return np.array([VECTORS.get(t, [0, 0, 0]) for t in texts], np.float32)


def test_embedding_simulator_scores_mean_cosine_to_the_words_minus_the_contrast_words():
    simulator = EmbeddingSimulator(encode)
    passages = np.array([[2, 0, 0], [0, 3, 0], [1, 1, 0]], np.float32)  # lengths do not matter: cosines
    assert simulator.scores("apple", passages) == pytest.approx([1, 0, 0.70711], abs=1e-5)
    assert simulator.scores(BROAD + "apple, fruit", passages) == pytest.approx([0.9, 0.3, 0.84853], abs=1e-5)
    assert simulator.scores("apple; not: car", passages) == pytest.approx([1, -1, 0], abs=1e-5)
    assert simulator.scores("", passages) == pytest.approx([0, 0, 0])
    assert simulator.word_vectors(["fruit"]) == pytest.approx(np.array([[0.8, 0.6, 0]]))


def test_choose_words_takes_the_best_predictor_first_and_contrast_words_only_after_a_word():
    fires = np.array([True, True, True, False, False, False])
    strong = np.array([True, False, False, False, False, False])
    columns = np.array([[0.9, 0.5, 0.1],   # 0: separates fires, and ranks the strong passage first
                        [0.8, 0.5, 0.2],
                        [0.7, 0.5, 0.0],
                        [0.1, 0.5, 0.9],   # 2 (a contrast word) is high where it does not fire
                        [0.2, 0.5, 0.8],
                        [0.3, 0.5, 0.7]])
    chosen, aucs = choose_words(columns, np.array([1, 1, -1]), [fires, strong], min_words=1, max_words=3,
                                max_contrast=1)
    assert chosen == [0] and aucs == [1.0, 1.0]  # perfect at once; nothing can add 0.002
    # Word 1 is constant (AUC 0.5 alone), so the contrast word must wait for it and then carries the label.
    chosen, aucs = choose_words(columns[:, 1:], np.array([1, -1]), [fires, strong], min_words=2, max_words=3,
                                max_contrast=1)
    assert chosen == [0, 1] and aucs == [1.0, 0.8]  # the strong passage (0.5 - 0.1) is beaten by row 2 (0.5 - 0)


def test_a_label_from_given_evidence_is_broad_with_its_own_aucs_and_contrast_candidates():
    texts = ["apple fruit"] * 6 + ["apple pie", "car engine", "car engine", "car road", "car road", "engine oil"]
    fire = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0, 0, 0, 0, 0]  # 7 of 12 passages
    latents = np.zeros((12, 1), np.int64)
    activations = np.array(fire, np.float32)[:, None]
    embeddings = np.array([[1, 0, 0]] + [[1, 0.3, 0]] * 6 + [[0, 1, 0]] * 5, np.float32)
    describer = EvidenceDescriber(None, texts, latents, activations, lambda w: w.lower() if len(w) > 2 else None,
                                  simulator=EmbeddingSimulator(encode), embeddings=embeddings, min_keywords=1,
                                  contrast_min_df=2, chooser="exact")
    # log odds silent/firing x sqrt(df): car 2.485 x 2 = 4.97, engine 2.234 x 1.73, road 1.897 x 1.41; oil: 1 passage
    assert describer.contrast_stems(activations[:, 0] > 0) == ["car", "engine", "road"]
    label = describer.label(0, Counter({"apple": 1.0, "fruit": 0.4}))
    assert label["keywords"] == ["apple"] and label["contrast"] == []
    assert label["description"] == BROAD + "apple" and label["kind"] == "broad" and label["df_share"] == 0.5833
    assert (label["auc_fires"], label["auc_strong"], label["simulator"]) == (1.0, 1.0, "embedding")
    counted = EvidenceDescriber(None, texts, latents, activations, lambda w: w.lower() if len(w) > 2 else None,
                                min_keywords=1).label(0, Counter({"apple": 1.0, "fruit": 0.4}))
    # By count, "apple" (every firing passage, no other) ties the strong passage with six others: strong (5 + 3) / 11;
    # "fruit" breaks the tie with "apple pie": (6 + 2.5) / 11. No contrast words with the keyword count.
    assert counted["keywords"] == ["apple", "fruit"] and counted["contrast"] == []
    assert (counted["auc_fires"], counted["auc_strong"], counted["simulator"]) == (1.0, 0.7727, "keywords")


def test_a_label_with_fewer_candidate_words_than_the_minimum_says_unclear():
    """Evidence that names one word cannot give a four-word label: it is marked unclear, though the word predicts
    perfectly (the AUCs are still its own)."""
    texts = ["apple fruit"] * 6 + ["apple pie", "car engine", "car engine", "car road", "car road", "engine oil"]
    fire = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0, 0, 0, 0, 0]
    activations = np.array(fire, np.float32)[:, None]
    stem = lambda w: w.lower() if len(w) > 2 else None  # noqa: E731
    counted = EvidenceDescriber(None, texts, np.zeros((12, 1), np.int64), activations, stem, min_keywords=4)
    label = counted.label(0, Counter({"apple": 1.0}))
    assert label["keywords"] == ["apple"] and label["kind"] == "unclear"
    assert label["description"] == UNCLEAR + "apple" and label["auc_fires"] == 1.0
    assert counted.label(0, Counter())["description"] == "" and counted.label(0, Counter())["kind"] == "unclear"


@pytest.fixture(scope="module")
def describer(slice_concept_index):
    from clsr.interpret.describe import KeywordDescriber
    from clsr.interpret.describers import evidence_describer_for
    from clsr.interpret.evidence import passage_texts

    texts = passage_texts(slice_concept_index)
    return evidence_describer_for(slice_concept_index, texts, KeywordDescriber(texts.values()).stem, top_passages=5,
                                  dtype="fp32")


def test_labels_report_their_own_auc_and_say_broad_or_unclear(describer):
    df = np.bincount(np.asarray(describer.latents)[np.asarray(describer.activations) > 0], minlength=8192)
    by_df = np.argsort(-df)
    chosen = [int(by_df[0]), int(by_df[1]), int(by_df[200]), int(by_df[400])]
    mass = describer.combined_mass(chosen)  # one evidence pass for both simulators
    labels = {latent: describer.label(latent, mass[latent]) for latent in chosen}
    stems = describer.passage_stems()
    counting = copy.copy(describer)
    counting.simulator = None
    for latent in chosen:
        label = labels[latent]
        # At least min_keywords words, or the label says it is unclear (which concepts have thin evidence
        # depends on the CPU's fp32 rounding, so the invariant is checked on whatever was picked).
        assert len(label["keywords"]) <= describer.max_keywords
        assert len(label["keywords"]) >= describer.min_keywords or label["kind"] == "unclear"
        assert len(label["contrast"]) <= describer.max_contrast and label["simulator"] == "embedding"
        assert parse_description(label["description"]) == (label["keywords"], label["contrast"])
        column = describer.activation_column(latent)
        # Its own AUCs are the embedding simulator's, reading nothing but the description and the passages.
        scores = describer.simulator.scores(label["description"], describer.embeddings)
        assert [label["auc_fires"], label["auc_strong"]] == pytest.approx(
            rank_aucs(scores, [column > 0, strong_labels(column)]), abs=1e-4)
        share = df[latent] / len(stems)
        assert label["df_share"] == pytest.approx(share, abs=1e-4)
        thin = len(label["keywords"]) < describer.min_keywords
        if thin or (label["auc_fires"] + label["auc_strong"]) / 2 < describer.min_auc:
            assert label["kind"] == "unclear" and label["description"].startswith(UNCLEAR)
        elif share >= describer.broad_share:
            assert label["kind"] == "broad" and label["description"].startswith(BROAD)
        else:
            assert label["kind"] == "specific" and not label["description"].startswith((BROAD, UNCLEAR))
        counted = counting.label(latent, mass[latent])
        keyword_stems = {describer.stem(k) for k in counted["keywords"]}
        counts = np.array([len(keyword_stems & passage) for passage in stems])
        assert counted["auc_fires"] == pytest.approx(count_auc(counts, column > 0), abs=1e-4)
        assert counted["auc_strong"] == pytest.approx(count_auc(counts, strong_labels(column)), abs=1e-4)
        assert counted["contrast"] == [] and counted["simulator"] == "keywords"
    assert labels[chosen[0]]["kind"] in {"broad", "unclear"}  # the most frequent concept fires on most passages


def test_the_one_pass_evidence_gives_the_two_pass_mass_and_the_same_labels(describer):
    """The fast path (one batched encoder pass for both pools, array bookkeeping) against clsr 0.1's path (a pass
    per pool, one text at a time, word by word): the same stems with the same mass up to float rounding, the
    same surface forms, and so the same labels from the same chooser."""
    df = np.bincount(np.asarray(describer.latents)[np.asarray(describer.activations) > 0], minlength=8192)
    by_df = np.argsort(-df, kind="stable")
    chosen = [int(by_df[0]), int(by_df[5]), int(by_df[150]), int(by_df[600])]  # head to tail
    slow_describer, fast_describer = copy.copy(describer), copy.copy(describer)
    slow_describer._surfaces, fast_describer._surfaces = defaultdict(Counter), defaultdict(Counter)
    slow = slow_describer.combined_mass_by_pool(chosen)
    fast = fast_describer.combined_mass(chosen)
    for latent in chosen:
        assert set(fast[latent]) == set(slow[latent]) and len(fast[latent]) > 5
        for stem, value in slow[latent].items():
            assert fast[latent][stem] == pytest.approx(value, rel=1e-4, abs=1e-7)
    assert dict(fast_describer._surfaces) == dict(slow_describer._surfaces)
    slow_describer.chooser = fast_describer.chooser = "exact"
    for latent in chosen:
        # A label is a discrete choice over the candidates, ranked by mass: where the two masses (equal up to
        # summation order, which differs by CPU and BLAS) rank the candidates alike, the labels must be equal;
        # where they do not, each reordered pair must be a near tie within that rounding.
        slow_stems = slow_describer.candidates(latent, slow[latent])[0]
        fast_stems = fast_describer.candidates(latent, fast[latent])[0]
        if slow_stems != fast_stems:
            for a, b in zip(slow_stems, fast_stems):
                if a != b:
                    assert slow[latent][a] == pytest.approx(slow[latent][b], rel=2e-4), (a, b)
            continue
        slow_label, fast_label = slow_describer.label(latent, slow[latent]), fast_describer.label(latent, fast[latent])
        assert fast_label["description"] == slow_label["description"]
        assert fast_label["auc_fires"] == pytest.approx(slow_label["auc_fires"], abs=1e-3)


def test_weighted_count_aucs_are_count_auc_per_column_and_honour_weights():
    rng = np.random.default_rng(7)
    counts, target = rng.integers(0, 4, (300, 3)), rng.random(300) < 0.3
    aucs = weighted_count_aucs(counts, np.ones(300), target, top=5)
    assert aucs == pytest.approx([count_auc(counts[:, j], target) for j in range(3)], abs=1e-12)
    # A row of weight 2 counts as that row twice.
    doubled = np.concatenate([counts, counts[:10]])
    weights = np.ones(300)
    weights[:10] = 2
    assert weighted_count_aucs(counts, weights, target, top=5) == pytest.approx(
        [count_auc(doubled[:, j], np.concatenate([target, target[:10]])) for j in range(3)], abs=1e-12)


def test_choose_words_both_prefers_words_both_simulators_agree_on():
    """Two words predict equally well by embedding; only one of them occurs in the passages where the concept
    fires. Chosen for the embedding alone it is a coin toss (the first); for both, the one that occurs."""
    fires = np.array([True] * 4 + [False] * 8)
    strong = np.array([True] + [False] * 11)
    embedding = np.array([[0.9, 0.9], [0.8, 0.8], [0.7, 0.7], [0.6, 0.6]] + [[0.1, 0.1]] * 8)
    presence = np.array([[0, 1]] * 4 + [[0, 0]] * 8)
    chosen = choose_words_both(embedding, presence, np.array([1, 1]), np.ones(12), [fires, strong],
                               min_words=1, max_words=1, max_contrast=0)
    assert chosen == [1]
    chosen = choose_words_both(embedding, presence, np.array([1, 1]), np.ones(12), [fires, strong],
                               min_words=1, max_words=1, max_contrast=0, count_weight=0.0)
    assert chosen == [0]
    # The binormal AUC proxy: a perfect separation scores 1, a constant word 0.5; contrast waits for a word.
    chosen = choose_words_both(embedding[:, :1], presence[:, 1:], np.array([1]), np.ones(12), [fires], min_words=1,
                               max_words=3, max_contrast=1)
    assert chosen == [0]
    assert normal_cdf(np.array([0.0, 1.0, -np.inf, np.inf])) == pytest.approx([0.5, 0.841345, 0, 1], abs=1e-6)


def test_the_default_chooser_labels_for_both_simulators_and_orders_words_by_evidence():
    texts = ["apple fruit"] * 6 + ["apple pie", "car engine", "car engine", "car road", "car road", "engine oil"]
    fire = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0, 0, 0, 0, 0]
    activations = np.array(fire, np.float32)[:, None]
    embeddings = np.array([[1, 0, 0]] + [[1, 0.3, 0]] * 6 + [[0, 1, 0]] * 5, np.float32)
    describer = EvidenceDescriber(None, texts, np.zeros((12, 1), np.int64), activations,
                                  lambda w: w.lower() if len(w) > 2 else None, simulator=EmbeddingSimulator(encode),
                                  embeddings=embeddings, min_keywords=1, contrast_min_df=2)
    label = describer.label(0, Counter({"fruit": 0.4, "apple": 1.0}))
    # "fruit" adds nothing for the embedding but lifts the keyword count's strong AUC (0.7273 -> 0.7727): kept,
    # and shown after "apple", whose evidence is stronger.
    assert label["keywords"] == ["apple", "fruit"] and label["chooser"] == "both"
    assert (label["auc_fires"], label["count_auc_fires"], label["count_auc_strong"]) == (1.0, 1.0, 0.7727)
