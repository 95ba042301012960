"""Descriptions from word evidence: which words make a concept fire, checked by a simulator that reads only text.

In the spirit of Neuron-to-Graph (Foote et al. 2023): for each concept, the word-level evidence
(``clsr.interpret.evidence``, pooling method) of its top passages, and of a seeded sample of the other
passages where it fires (what makes it fire at all, not only strongly), is aggregated by stem, each
passage voting with its positive evidence normalised to one, and the two pools weighing equally.
The strongest stems are the *candidate words*. *Contrast candidates* are the stems most
over-represented in the passages where the concept does not fire (what a passage is about when it
stays silent); for a concept that fires on most of the corpus they say more than its own words.

A description is judged by a *simulator*, as in Bills et al. 2023 ("Language models can explain
neurons in language models"): something that sees only the description's text and a passage's
text and predicts how strongly the concept fires there. Two simulators, neither of which sees the
SAE, the concept's activations or its decoder direction:

* :class:`EmbeddingSimulator` (the default): each word of the description is embedded alone with
  the dense encoder (the index's, e.g. MiniLM), as is the passage; the prediction is the passage's
  mean cosine to the description's words minus its mean cosine to its contrast words (``not: ...``).
* the keyword count (``simulator=None``): how many of the description's words (stemmed) the
  passage contains; no contrast words.

The label keeps, greedily, the candidates (and contrast candidates) whose simulated score best
predicts the concept in the corpus the describer sees (mean of two ROC AUCs: the passage fires,
and the passage is in the concept's top decile), at least ``min_keywords`` and up to
``max_keywords`` words, stopping when a word no longer helps. So a label is both a cause (evidence)
and a predictor (checked against activations). The defaults were chosen on SciFact's describe half
(benchmarks/descriptions.py).

Plain-language markers, so that a reader is not misled:

* ``broad: ...`` when the concept fires on at least ``broad_share`` of the passages;
* ``unclear: ...`` when even the best label predicts it poorly (AUC below ``min_auc`` on the
  describer's own corpus), or when fewer than ``min_keywords`` candidate words exist (evidence
  too thin to name it); the words after it are the strongest evidence, not a faithful label;
* ``...; not: x, y`` the contrast words: passages about these are where it does not fire.

:func:`parse_description` turns any description back into its words and contrast words (markers
dropped), so faithfulness is measured the same way for every describer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from clsr.index.streaming import read_rows, release

CHOOSERS = ("both", "exact")
BROAD = "broad: "
UNCLEAR = "unclear: "
CONTRAST = "; not: "


def parse_description(description: str) -> tuple[list[str], list[str]]:
    """(words, contrast words) of a description: "broad: a, b; not: c" -> (["a", "b"], ["c"]).

    Markers and empty parts are dropped; a description without ``; not:`` has no contrast words.
    """
    text = description
    for marker in (BROAD, UNCLEAR):
        if text.startswith(marker):
            text = text[len(marker):]
    text, _, contrast = text.partition(CONTRAST.strip())  # "not:" ends the words however it is spaced
    text = text.rstrip().rstrip(";")

    def split(part: str) -> list[str]:
        return [word.strip() for word in part.split(",") if word.strip()]

    return split(text), split(contrast)


def description_keywords(description: str) -> list[str]:
    """The keywords of a description ("broad: a, b; not: c" -> ["a", "b"]), markers and contrast words dropped."""
    return parse_description(description)[0]


def rank_aucs(scores: np.ndarray, targets: Sequence[np.ndarray]) -> list[float | None]:
    """ROC AUC of real-valued `scores` (n,) against each boolean target (n,), ties counting half.

    One sort serves every target (Mann-Whitney: the mean rank of the positives); None for a target
    without both classes.
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    cuts = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [n]])
    ranks = np.empty(n, np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based, ties at their mean rank
    out = []
    for target in targets:
        target = np.asarray(target, bool)
        positives = int(target.sum())
        negatives = n - positives
        out.append(None if positives == 0 or negatives == 0 else
                   float((ranks[target].sum() - positives * (positives + 1) / 2) / (positives * negatives)))
    return out



# A concept firing on at least this share of the passages is "broad": its label says so, and an explanation folds
# such concepts into one line after the words and the specific concepts (`clsr.interpret.explain`).
BROAD_SHARE = 0.2

class EmbeddingSimulator:
    """Predicts where a concept fires from its description's text alone, with a dense text encoder.

    Each word of the description is embedded on its own (cached), as each passage is; a passage's
    score is its mean cosine to the description's words minus its mean cosine to the contrast words
    (:func:`parse_description`), 0 for a description without words. It never sees the SAE. `encode`
    maps a list of texts to (len, d) embeddings, e.g. ``DenseEncoder.encode``.
    """

    def __init__(self, encode):
        self.encode = encode
        self._vectors: dict[str, np.ndarray] = {}

    def word_vectors(self, words: Sequence[str]) -> np.ndarray:
        """(len(words), d) unit vectors of the words, each embedded alone (once)."""
        missing = [w for w in dict.fromkeys(words) if w not in self._vectors]
        if missing:
            for word, vector in zip(missing, unit_rows(self.encode(missing))):
                self._vectors[word] = vector
        if not words:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._vectors[w] for w in words])

    def scores(self, description: str, passage_embeddings: np.ndarray) -> np.ndarray:
        """(n,) the simulated activation of each passage (rows of (n, d) embeddings, of the same encoder)."""
        return self.unit_scores(description, unit_rows(passage_embeddings))

    def unit_scores(self, description: str, unit_passages: np.ndarray) -> np.ndarray:
        """:meth:`scores` of passages whose embeddings are already `unit_rows` (n, d): one matrix-vector product,
        for a caller that scores many descriptions against the same passages."""
        words, contrast = parse_description(description)
        if not words:
            return np.zeros(len(unit_passages))
        direction = self.word_vectors(words).mean(0)
        if contrast:
            direction = direction - self.word_vectors(contrast).mean(0)
        return unit_passages @ direction


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to length 1 (zero rows stay zero)."""
    matrix = np.asarray(matrix, np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1)


def choose_words(columns: np.ndarray, signs: np.ndarray, targets: Sequence[np.ndarray], *, min_words: int,
                 max_words: int, max_contrast: int, min_gain: float = 0.002) -> tuple[list[int], list[float | None]]:
    """Greedy forward selection of a description's words: (chosen column indices, their AUC per target).

    `columns` (n, m): each candidate word's simulated score on each passage; `signs` (m,): +1 for a
    word, -1 for a contrast word. A description scores a passage with the mean of its words'
    columns minus the mean of its contrast words' (for presence columns and no contrast words, the
    ranking of the keyword count). Each step adds the candidate that most raises the mean AUC over
    `targets`; it stops at `max_words`, or past `min_words` when the gain is at most `min_gain`.
    Contrast words only join after a word, and at most `max_contrast` of them.
    """
    columns = np.asarray(columns, np.float64)
    n, m = columns.shape
    chosen: list[int] = []
    total = {1: np.zeros(n), -1: np.zeros(n)}
    count = {1: 0, -1: 0}
    best: tuple[float, list[float | None]] = (0.0, [None] * len(targets))
    while len(chosen) < max_words:
        trials = []
        for j in range(m):
            sign = int(signs[j])
            if j in chosen or (sign < 0 and (count[1] == 0 or count[-1] >= max_contrast)):
                continue
            plus = (total[1] + columns[:, j] * (sign > 0)) / (count[1] + (sign > 0))
            minus = (total[-1] + columns[:, j] * (sign < 0)) / max(count[-1] + (sign < 0), 1)
            aucs = rank_aucs(plus - minus, targets)
            if any(a is None for a in aucs):
                continue
            trials.append((float(np.mean(aucs)), -j, aucs))
        if not trials:
            break
        value, negative_j, aucs = max(trials, key=lambda t: (t[0], t[1]))
        if len(chosen) >= min_words and value <= best[0] + min_gain:  # a word must earn its place
            break
        j = -negative_j
        chosen.append(j)
        sign = int(signs[j])
        total[sign] = total[sign] + columns[:, j]
        count[sign] += 1
        best = (value, aucs)
    return chosen, best[1]


def count_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of small non-negative integer scores (ties count half), in O(n); None without both classes."""
    labels = np.asarray(labels, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    top = int(scores.max()) + 1 if len(scores) else 1
    pos = np.bincount(scores[labels].astype(np.int64), minlength=top).astype(np.float64)
    neg = np.bincount(scores[~labels].astype(np.int64), minlength=top).astype(np.float64)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives strictly below each score
    return float((pos * (below + 0.5 * neg)).sum() / (positives * negatives))


def strong_labels(activations: np.ndarray, share: float = 0.1) -> np.ndarray:
    """The top `share` of the passages where the concept fires (at least one), by activation."""
    firing = np.flatnonzero(activations > 0)
    labels = np.zeros(len(activations), bool)
    if len(firing):
        count = max(1, int(np.ceil(share * len(firing))))
        labels[firing[np.argsort(-activations[firing], kind="stable")[:count]]] = True
    return labels


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF, elementwise (Abramowitz and Stegun 7.1.26: error below 1.5e-7); +-inf allowed."""
    x = np.asarray(x, np.float64)
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def weighted_count_aucs(counts: np.ndarray, weights: np.ndarray, target: np.ndarray, top: int) -> np.ndarray:
    """(m,) ROC AUC of each column of small non-negative integer `counts` (r, m) for the boolean `target` (r,),
    rows weighted by `weights` (r,) (a stratified sample standing for the whole corpus), ties counting half.
    Scores run from 0 to `top` - 1. NaN where the target lacks a class."""
    r, m = counts.shape
    index = (np.arange(m)[None, :] * top + np.minimum(counts, top - 1)).ravel()
    positive = np.bincount(index, weights=np.repeat(weights * target, m), minlength=m * top).reshape(m, top)
    negative = np.bincount(index, weights=np.repeat(weights * ~target, m), minlength=m * top).reshape(m, top)
    below = np.cumsum(negative, axis=1) - negative
    total = positive.sum(1) * negative.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (positive * (below + 0.5 * negative)).sum(1) / total, np.nan)


def choose_words_both(embedding: np.ndarray, presence: np.ndarray, signs: np.ndarray, weights: np.ndarray,
                      targets: Sequence[np.ndarray], *, min_words: int, max_words: int, max_contrast: int,
                      count_weight: float = 0.5, min_gain: float = 0.002) -> list[int]:
    """Greedy forward selection of a description's words for both simulators at once: chosen column indices.

    `embedding` (r, m): each candidate word's cosine to each sampled passage (the embedding simulator's
    columns); `presence` (r, m): whether the passage contains the word (the keyword count's; 0 for contrast
    words, which the count ignores); `signs` (m,) +1 word, -1 contrast word; `weights` (r,) how many
    passages each sampled row stands for. Each step adds the candidate that most raises
    ``(1 - count_weight) x`` the embedding simulator's mean AUC over `targets` ``+ count_weight x`` the keyword
    count's. The count's AUC is exact (on the weighted sample); the embedding's is the binormal one,
    Phi((mean_pos - mean_neg) / sqrt(var_pos + var_neg)), computed in closed form from the columns' means and
    covariances, so a step costs a few (m, m) products rather than a sort per candidate. Stops as
    :func:`choose_words` does.
    """
    embedding = np.asarray(embedding, np.float64)
    presence = np.asarray(presence, np.float64)
    weights = np.asarray(weights, np.float64)
    r, m = embedding.shape
    signs = np.asarray(signs)
    targets = [np.asarray(t, bool) for t in targets]
    targets = [t for t in targets if (weights * t).sum() > 0 and (weights * ~t).sum() > 0]
    if not targets or not m:
        return []
    # Weighted first and second moments per group of rows with the same targets (3 groups for fires/strong), so
    # each class's mean and covariance is a sum of group moments: one (m, m) product per group.
    pattern = sum(t.astype(np.int64) << i for i, t in enumerate(targets))
    groups = {}
    for value in np.unique(pattern):
        rows = pattern == value
        w = weights[rows]
        x = embedding[rows]
        groups[int(value)] = (w.sum(), w @ x, (x * w[:, None]).T @ x)
    moments = []  # per target: difference of class means (m,), sum of class covariances (m, m), its diagonal
    for i in range(len(targets)):
        means, covariance = [], np.zeros((m, m))
        for bit in (1, 0):
            parts = [moment for value, moment in groups.items() if (value >> i) & 1 == bit]
            total = sum(p[0] for p in parts)
            mean = sum(p[1] for p in parts) / total
            covariance += sum(p[2] for p in parts) / total - np.outer(mean, mean)
            means.append(mean)
        moments.append((means[0] - means[1], covariance, np.diag(covariance).copy()))
    class_weights = np.stack([w for t in targets for w in (weights * t, weights * ~t)], axis=1)  # (r, classes)
    chosen: list[int] = []
    plus, minus = np.zeros(m), np.zeros(m)
    counts = np.zeros(r, np.int64)
    best = -np.inf
    is_word = signs > 0
    word_presence = presence * is_word[None, :]
    while len(chosen) < max_words:
        n_plus, n_minus = plus.sum(), minus.sum()
        allowed = np.ones(m, bool)
        allowed[chosen] = False
        if n_plus == 0 or n_minus >= max_contrast:
            allowed &= is_word
        if not allowed.any():
            break
        # The description's score with candidate j added has coefficients u + v_j e_j, where u is one of two
        # vectors (j a word, or j a contrast word): two quadratic forms per target, not one per candidate.
        u_word = plus / (n_plus + 1) - minus / max(n_minus, 1)
        u_contrast = plus / max(n_plus, 1) - minus / (n_minus + 1)
        v = np.where(is_word, 1.0 / (n_plus + 1), -1.0 / (n_minus + 1))
        embedding_aucs = []
        for difference, covariance, diagonal in moments:
            gap, spread = np.empty(m), np.empty(m)
            for u, kind in ((u_word, is_word), (u_contrast, ~is_word)):
                cu = covariance @ u
                gap[kind] = u @ difference + v[kind] * difference[kind]
                spread[kind] = u @ cu + 2 * v[kind] * cu[kind] + v[kind] ** 2 * diagonal[kind]
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(spread > 1e-18, gap / np.sqrt(np.maximum(spread, 1e-18)), np.sign(gap) * np.inf)
            embedding_aucs.append(normal_cdf(z))
        objective = (1 - count_weight) * np.mean(embedding_aucs, axis=0)
        if count_weight:
            # The count with candidate j added is counts + presence_j: its weighted histograms, per class of each
            # target, from one product (rows by current count and class, against presence).
            levels = int(counts.max()) + 2
            onehot = np.zeros((r, levels))
            onehot[np.arange(r), counts] = 1.0
            stacked = (onehot[:, None, :] * class_weights[:, :, None]).reshape(r, -1)  # (r, classes x levels)
            with_word = (stacked.T @ word_presence).reshape(len(class_weights[0]), levels, m)
            without = (stacked.sum(0).reshape(-1, levels))[:, :, None] - with_word
            shifted = np.concatenate([np.zeros_like(with_word[:, :1]), with_word], axis=1)
            histograms = np.concatenate([without, np.zeros_like(without[:, :1])], axis=1) + shifted
            count_aucs = []
            for t in range(len(targets)):
                positive, negative = histograms[2 * t], histograms[2 * t + 1]  # (levels + 1, m)
                below = np.cumsum(negative, axis=0) - negative
                total = positive.sum(0) * negative.sum(0)
                count_aucs.append((positive * (below + 0.5 * negative)).sum(0) / np.maximum(total, 1e-300))
            objective = objective + count_weight * np.mean(count_aucs, axis=0)
        objective = np.where(allowed, objective, -np.inf)
        j = int(np.argmax(objective))  # the first of equals: candidates come strongest first
        if len(chosen) >= min_words and objective[j] <= best + min_gain:
            break
        chosen.append(j)
        best = float(objective[j])
        if is_word[j]:
            plus[j] = 1
            counts = counts + presence[:, j].astype(np.int64)
        else:
            minus[j] = 1
    return chosen


class EvidenceDescriber:
    """Labels concepts of one corpus from word evidence, checked against where they fire.

    `texts` and the code arrays (`latents`, `activations`: (n, K) top-K codes, as an index's
    doc_codes) describe the same passages in the same order; `explainer` is a
    :class:`clsr.interpret.evidence.EvidenceExplainer` for the index's encoder and SAE; `stemmer` maps a word to
    its stem or None (e.g. ``KeywordDescriber.stem``: Lucene's English analyser). With a `simulator`
    (:class:`EmbeddingSimulator`) and the passages' dense `embeddings` (n, d), labels are chosen for
    that simulator and may carry contrast words; without, for the keyword count. Candidate words
    must occur in at least `candidate_min_df` passages, contrast words in `contrast_min_df`.

    When the passages are a subset of a larger index (:func:`describe_subset`), `corpus_rows` (n,) are their rows
    in the index and `df_shares` (latents,) each concept's share of the whole index's passages: a label's
    ``df_share``, and so whether it reads ``broad:``, is the index's, because the subset over-represents every
    concept's top passages. Everything else (evidence, AUCs, contrast words) is over the passages given. With
    `evidence_pool` (rows), word evidence is read only from those rows and each described concept's `evidence_top`
    strongest passages (default :data:`EVIDENCE_TOP`): a concept's two evidence pools are drawn from its firing
    passages among them (:meth:`pools`), so the encoder passes stop growing with the passages given.
    """

    def __init__(self, explainer, texts: Sequence[str], latents: np.ndarray, activations: np.ndarray, stemmer,
                 *, simulator: EmbeddingSimulator | None = None, embeddings: np.ndarray | None = None,
                 top_passages: int = 10, sample_passages: int = 20, candidates: int = 40,
                 contrast_candidates: int = 30, min_keywords: int = 4, max_keywords: int = 12,
                 max_contrast: int = 6, contrast_min_df: int = 5, candidate_min_df: int = 3,
                 broad_share: float = BROAD_SHARE, min_auc: float = 0.65, seed: int = 0, chooser: str = "both",
                 sample_rows: int = 256, batch_size: int = 16, count_weight: float = 0.5,
                 corpus_rows: np.ndarray | None = None, df_shares: np.ndarray | None = None,
                 evidence_pool: np.ndarray | None = None, evidence_top: int | None = None):
        if simulator is not None and (embeddings is None or len(embeddings) != len(texts)):
            raise ValueError("the embedding simulator needs one dense embedding per passage")
        self.explainer, self.texts, self.stem = explainer, list(texts), stemmer
        self.latents, self.activations = np.asarray(latents, np.int64), np.asarray(activations, np.float32)
        self.simulator = simulator
        self.embeddings = None if embeddings is None else unit_rows(embeddings)
        self._scored_rows: np.ndarray | None = None  # unit_rows(self.embeddings): the rows `scores` would score
        self.top_passages, self.sample_passages, self.candidates_kept = top_passages, sample_passages, candidates
        self.contrast_candidates, self.max_contrast = contrast_candidates, max_contrast
        self.contrast_min_df = contrast_min_df
        self.candidate_min_df = candidate_min_df
        self.seed = seed
        self.min_keywords, self.max_keywords = min_keywords, max_keywords
        self.broad_share, self.min_auc = broad_share, min_auc
        self._stems: list[frozenset[str]] | None = None
        self._postings: dict[str, np.ndarray] | None = None
        self._flat: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None
        self._surfaces: dict[str, Counter] = defaultdict(Counter)  # stem -> its surface forms in evidence
        self._corpus_surfaces: dict[str, Counter] = defaultdict(Counter)  # stem -> its surface forms in the corpus
        if chooser not in CHOOSERS:
            raise ValueError(f"chooser must be one of {CHOOSERS}, not {chooser!r}")
        self.chooser, self.sample_rows, self.batch_size = chooser, sample_rows, batch_size
        self.count_weight = count_weight  # the keyword count's share of the "both" chooser's objective
        self.corpus_rows = None if corpus_rows is None else np.asarray(corpus_rows, np.int64)
        self.df_shares = None if df_shares is None else np.asarray(df_shares, np.float64)
        self.evidence_pool = None if evidence_pool is None else np.asarray(evidence_pool, np.int64)
        self.evidence_top = EVIDENCE_TOP if evidence_top is None else evidence_top
        # Each concept's firing passages, strongest first (ties in passage order), found without scanning the codes.
        fired = self.activations > 0
        rows = np.nonzero(fired)[0]
        flat_latents, flat_values = self.latents[fired], self.activations[fired]
        order = np.lexsort((-flat_values, flat_latents))
        self._firing_rows, self._firing_values = rows[order], flat_values[order]
        self.n_latents = int(self.latents.max()) + 1 if self.latents.size else 0
        self._firing_starts = np.searchsorted(flat_latents[order], np.arange(self.n_latents + 1))
        self._stem_cache: dict[str, str | None] = {}
        self._vocabulary: tuple[dict[str, int], object] | None = None  # stem -> column, (passages, stems) CSR

    def passage_stems(self) -> list[frozenset[str]]:
        """Each passage's set of stems (computed once; the presence test every label is scored by)."""
        if self._stems is None:
            from clsr.interpret.evidence import WORD_PATTERN

            self._stems = []
            for text in self.texts:
                stems = set()
                for word in WORD_PATTERN.findall(text):
                    stem = self.stem(word)
                    if stem:
                        stems.add(stem)
                        self._corpus_surfaces[stem][word.lower()] += 1
                self._stems.append(frozenset(stems))
        return self._stems

    def presence(self, stems: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """(passages, len(stems)) bool: which passages contain each stem (from an inverted index built once);
        only the passages `rows`, in that order, when given."""
        if self._postings is None:
            postings: dict[str, list[int]] = defaultdict(list)
            for row, passage in enumerate(self.passage_stems()):
                for stem in passage:
                    postings[stem].append(row)
            self._postings = {stem: np.array(r, np.int64) for stem, r in postings.items()}
        empty = np.zeros(0, np.int64)
        if rows is None:
            present = np.zeros((len(self.texts), len(stems)), bool)
            for j, stem in enumerate(stems):
                present[self._postings.get(stem, empty), j] = True
            return present
        position = np.full(len(self.texts), -1, np.int64)
        position[rows] = np.arange(len(rows))
        present = np.zeros((len(rows), len(stems)), bool)
        for j, stem in enumerate(stems):
            found = position[self._postings.get(stem, empty)]
            present[found[found >= 0], j] = True
        return present

    def contrast_stems(self, fires: np.ndarray) -> list[str]:
        """The stems most over-represented where the concept does not fire, strongest first.

        Smoothed log odds of a stem's presence in the non-firing against the firing passages, times
        the square root of its document frequency (a frequent word says more than a one-off), over
        stems in at least `contrast_min_df` passages; none when fewer than 5 passages stay silent.
        """
        fires = np.asarray(fires, bool)
        silent, firing = int((~fires).sum()), int(fires.sum())
        if silent < 5 or not self.contrast_candidates:
            return []
        if self._flat is None:
            self.presence([])
            stems = list(self._postings)
            owner = np.concatenate([np.full(len(self._postings[s]), i) for i, s in enumerate(stems)]
                                   or [np.zeros(0, np.int64)])
            rows = np.concatenate([self._postings[s] for s in stems] or [np.zeros(0, np.int64)])
            self._flat = (stems, owner.astype(np.int64), rows,
                          np.bincount(owner.astype(np.int64), minlength=len(stems)))
        stems, owner, rows, df = self._flat
        in_firing = np.bincount(owner[fires[rows]], minlength=len(stems)).astype(np.float64)
        in_silent = df - in_firing
        odds = np.log((in_silent + 0.5) / (silent + 1)) - np.log((in_firing + 0.5) / (firing + 1))
        weight = np.where((df >= self.contrast_min_df) & (odds > 0), odds * np.sqrt(df), -np.inf)
        order = np.argsort(-weight, kind="stable")[:self.contrast_candidates]
        return [stems[i] for i in order if np.isfinite(weight[i])]

    def surface(self, stem: str, evidence: bool = True) -> str:
        """How a stem is shown: its commonest form among the evidence words (if `evidence`), else in the corpus."""
        for surfaces in ((self._surfaces,) if evidence else ()) + (self._corpus_surfaces,):
            if surfaces.get(stem):
                return commonest(surfaces[stem])
        self.passage_stems()
        return commonest(self._corpus_surfaces[stem]) if self._corpus_surfaces.get(stem) else stem

    def firing(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, activations) of the passages where the concept fires, strongest first (ties in passage order)."""
        if not 0 <= latent < self.n_latents:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        start, end = self._firing_starts[latent], self._firing_starts[latent + 1]
        return self._firing_rows[start:end], self._firing_values[start:end]

    def activation_column(self, latent: int) -> np.ndarray:
        """(n,) the concept's activation in each passage's code (0 where it is not in the code)."""
        column = np.zeros(len(self.texts), np.float32)
        rows, values = self.firing(latent)
        column[rows] = values
        return column

    def top_rows(self, column: np.ndarray) -> list[int]:
        firing = np.flatnonzero(column > 0)
        return firing[np.argsort(-column[firing], kind="stable")[:self.top_passages]].tolist()

    def evidence_mass(self, latents: Iterable[int], rows_for: dict[int, list[int]] | None = None) -> dict[int, Counter]:
        """{latent: Counter(stem -> evidence mass)} over each latent's passages (by default its top passages,
        else `rows_for[latent]`); one encoder pass per passage, shared by every latent that wants it."""
        from clsr.interpret.evidence import word_scores, word_spans

        latents = list(latents)
        if rows_for is None:
            rows_for = {latent: self.top_rows(self.activation_column(latent)) for latent in latents}
        wanted: dict[int, list[int]] = defaultdict(list)  # passage row -> latents it is a top passage of
        for latent in latents:
            for row in rows_for[latent]:
                wanted[row].append(latent)
        mass: dict[int, Counter] = {latent: Counter() for latent in latents}
        for row in sorted(wanted):
            text = self.texts[row]
            (offsets, contributions, _), = self.explainer.token_contributions([text])
            chosen = contributions[:, wanted[row]]
            scores = word_scores(word_spans(text), offsets, chosen - chosen.mean(0, keepdims=True))
            spans = word_spans(text)
            for j, latent in enumerate(wanted[row]):
                positive = np.clip(scores[:, j], 0, None)
                total = positive.sum()
                if total <= 0:
                    continue
                for (start, end), value in zip(spans, positive / total):
                    stem = self.stem(text[start:end]) if value > 0 else None
                    if stem:
                        mass[latent][stem] += float(value)
                        self._surfaces[stem][text[start:end].lower()] += 1
        return mass

    def candidates(self, latent: int, mass: Counter) -> tuple[list[str], list[str], np.ndarray]:
        """(stems, words, signs) a label is chosen from: the strongest evidence stems (strongest first) and, with
        the embedding simulator, contrast stems after them; `words` are how each is shown, `signs` +1 for a
        word and -1 for a contrast word."""
        if self.candidate_min_df > 1:  # a word in one or two passages reads as noise, however well it fits
            self.presence([])
            common = Counter({stem: value for stem, value in mass.items()
                              if len(self._postings.get(stem, ())) >= self.candidate_min_df})
            # ...unless rare words are all the evidence there is (a concept of one passage): then they are the label,
            # which the AUC check marks unclear where it predicts poorly, rather than no label at all.
            mass = common or mass
        positive = [stem for stem, _ in mass.most_common(self.candidates_kept)]
        words = [self.surface(stem) for stem in positive]
        if self.simulator is None:
            return positive, words, np.ones(len(positive))
        rows, _ = self.firing(latent)
        fires = np.zeros(len(self.texts), bool)
        fires[rows] = True
        taken = set(positive) | set(words)
        contrast_stems = [stem for stem in self.contrast_stems(fires) if stem not in taken]
        shown = {}
        for stem in contrast_stems:
            shown.setdefault(self.surface(stem, evidence=False), stem)
        contrast = {word: stem for word, stem in shown.items() if word not in taken}
        return (positive + list(contrast.values()), words + list(contrast),
                np.array([1.0] * len(words) + [-1.0] * len(contrast)))

    def selection_rows(self, latent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, weights, fires, strong): a seeded stratified sample of the passages to choose words on, at most
        `sample_rows` each of the concept's strong passages, its other firing passages and its silent ones,
        each row weighted by how many passages of its stratum it stands for. A concept firing on thousands of
        passages is judged on a thousand rows or fewer; a small corpus is taken whole."""
        n = len(self.texts)
        firing, values = self.firing(latent)
        strong_count = max(1, int(np.ceil(0.1 * len(firing)))) if len(firing) else 0
        strata = [firing[:strong_count], firing[strong_count:]]
        rng = np.random.default_rng([self.seed, latent, 1])
        cap = self.sample_rows
        if n - len(firing) <= 4 * cap:
            silent = np.setdiff1d(np.arange(n), firing)
        else:  # draw rows and drop the firing ones: the silent stratum without listing it
            drawn = rng.choice(n, size=min(n, cap + len(firing)), replace=False)
            silent = np.setdiff1d(drawn, firing)
            silent = rng.permutation(silent)[:cap]
        strata.append(silent)
        sizes = [len(strata[0]), len(strata[1]), n - len(firing)]
        rows, weights, labels = [], [], []
        for number, (stratum, size) in enumerate(zip(strata, sizes)):
            if len(stratum) > cap:
                stratum = np.sort(rng.choice(stratum, size=cap, replace=False))
            rows.append(np.asarray(stratum, np.int64))
            weights.append(np.full(len(stratum), size / max(len(stratum), 1)))
            labels.append(np.full(len(stratum), number))
        rows, weights, labels = np.concatenate(rows), np.concatenate(weights), np.concatenate(labels)
        return rows, weights, labels < 2, labels == 0

    def count_scores(self, words: Sequence[str]) -> np.ndarray:
        """(n,) how many of the words (by stem) each passage contains: the keyword count simulator."""
        stems = list(dict.fromkeys(s for s in (self.stem(w) for w in words) if s))
        return self.presence(stems).sum(1) if stems else np.zeros(len(self.texts), np.int64)

    def label(self, latent: int, mass: Counter, candidates: tuple | None = None) -> dict:
        """{"description", "keywords", "contrast", "auc_fires", "auc_strong", "kind", "df_share", "simulator",
        "count_auc_fires", "count_auc_strong", "chooser"}.

        The AUCs are the label's own, under its simulator, on the corpus it was described from; with the
        embedding simulator ``count_auc_*`` are the keyword count's for the same words. Words are chosen by
        `chooser`: ``"both"`` (the default) for both simulators at once on a stratified sample of passages
        (:func:`choose_words_both`), shown strongest evidence first; ``"exact"`` for the one simulator, by
        exact AUC on every passage (:func:`choose_words`; clsr 0.1's labels), in the order chosen.
        """
        column = self.activation_column(latent)
        fires, strong = column > 0, strong_labels(column)
        stems, words, signs = candidates if candidates is not None else self.candidates(latent, mass)
        both = self.simulator is not None and self.chooser == "both"
        if both:
            rows, weights, sample_fires, sample_strong = self.selection_rows(latent)
            vectors = self.simulator.word_vectors(words) if words else np.zeros((0, 0), np.float32)
            embedding = self.embeddings[rows] @ vectors.T if words else np.zeros((len(rows), 0))
            present = self.presence(stems, rows) & (signs > 0)[None, :]
            chosen = choose_words_both(embedding, present, signs, weights, [sample_fires, sample_strong],
                                       min_words=self.min_keywords, max_words=self.max_keywords,
                                       max_contrast=self.max_contrast, count_weight=self.count_weight)
            rank = {stem: n for n, stem in enumerate(stems)}  # candidates come strongest evidence first
            chosen = sorted(chosen, key=lambda j: (signs[j] < 0, rank[stems[j]]))
        else:
            if self.simulator is None:
                columns = self.presence(stems).astype(np.float64)
            else:
                columns = (self.embeddings @ self.simulator.word_vectors(words).T if words
                           else np.zeros((len(fires), 0)))
            chosen, _ = choose_words(columns, signs, [fires, strong], min_words=self.min_keywords,
                                     max_words=self.max_keywords,
                                     max_contrast=0 if self.simulator is None else self.max_contrast)
        keywords = [words[j] for j in chosen if signs[j] > 0]
        excluded = [words[j] for j in chosen if signs[j] < 0]
        if not keywords:  # no word set the chooser kept: the strongest evidence words, which the AUCs then judge
            keywords = [word for word, sign in zip(words, signs) if sign > 0][:max(1, self.min_keywords)]
            excluded = []
        counts = self.count_scores(keywords)
        count_aucs = [count_auc(counts, fires), count_auc(counts, strong)] if keywords else [None, None]
        if self.simulator is None or not keywords:
            a_fires, a_strong = count_aucs
        else:
            description = ", ".join(keywords) + (CONTRAST + ", ".join(excluded) if excluded else "")
            if self._scored_rows is None:  # what `scores` would normalise again for every concept (most of the time)
                self._scored_rows = unit_rows(self.embeddings)
            a_fires, a_strong = rank_aucs(self.simulator.unit_scores(description, self._scored_rows), [fires, strong])
        if self.df_shares is not None:  # a subset's share would call a concept broad for its top passages
            share = float(self.df_shares[latent]) if latent < len(self.df_shares) else 0.0
        else:
            share = float(fires.mean()) if len(fires) else 0.0
        kind = "broad" if share >= self.broad_share else "specific"
        if a_fires is None or (a_fires + a_strong) / 2 < self.min_auc or len(keywords) < self.min_keywords:
            kind = "unclear"  # too few words to be a label is as unclear as a label that predicts poorly
        prefix = {"broad": BROAD, "unclear": UNCLEAR}.get(kind, "")
        description = (prefix + ", ".join(keywords) + (CONTRAST + ", ".join(excluded) if excluded else "")
                       if keywords else "")

        def rounded(value):
            return None if value is None else round(value, 4)

        return {"description": description, "keywords": keywords, "contrast": excluded,
                "auc_fires": rounded(a_fires), "auc_strong": rounded(a_strong), "kind": kind,
                "df_share": round(share, 4), "simulator": "keywords" if self.simulator is None else "embedding",
                "count_auc_fires": rounded(count_aucs[0]), "count_auc_strong": rounded(count_aucs[1]),
                "chooser": "both" if both else "exact"}

    def sampled_rows(self, latent: int, column: np.ndarray) -> list[int]:
        """A seeded sample of the passages where the concept fires, other than its top passages."""
        top = set(self.top_rows(column))
        rest = [int(row) for row in np.flatnonzero(column > 0) if row not in top]
        rng = np.random.default_rng([self.seed, latent])  # per concept: the same sample whatever else is described
        if not rest:
            return []
        return sorted(int(r) for r in rng.choice(rest, size=min(self.sample_passages, len(rest)), replace=False))

    def combined_mass_by_pool(self, latents: Sequence[int]) -> dict[int, Counter]:
        """:meth:`combined_mass` the slow way, for reference: one pass over the top passages, another over the
        sampled ones, one text at a time, word by word (what clsr 0.1's describer did)."""
        top = self.evidence_mass(latents)
        if not self.sample_passages:
            return top
        sampled = self.evidence_mass(latents, {l: self.sampled_rows(l, self.activation_column(l)) for l in latents})

        def normalised(counter: Counter) -> Counter:
            total = sum(counter.values()) or 1.0
            return Counter({stem: value / total for stem, value in counter.items()})

        return {l: normalised(top[l]) + normalised(sampled[l]) for l in latents}

    def pools(self, latents: Sequence[int]) -> list[dict[int, np.ndarray]]:
        """[top passages, sampled firing passages] of each concept: rows, as :meth:`top_rows` and
        :meth:`sampled_rows` choose them (the same seeded sample), from the concept's firing list; with an
        `evidence_pool`, from its firing passages among the pool and every described concept's `evidence_top`
        strongest passages (its own first)."""
        allowed = None
        if self.evidence_pool is not None:
            allowed = np.zeros(len(self.texts), bool)
            allowed[self.evidence_pool] = True
            for latent in latents:
                allowed[self.firing(latent)[0][:self.evidence_top]] = True
        top, sampled = {}, {}
        for latent in latents:
            rows, _ = self.firing(latent)
            if allowed is not None:
                rows = rows[allowed[rows]]
            top[latent] = rows[:self.top_passages]
            rest = np.sort(rows[self.top_passages:])
            if self.sample_passages and len(rest):
                rng = np.random.default_rng([self.seed, latent])
                sampled[latent] = np.sort(rng.choice(rest, size=min(self.sample_passages, len(rest)),
                                                     replace=False))
            else:
                sampled[latent] = rest[:0]
        return [top, sampled] if self.sample_passages else [top]

    def _word_ids(self, words: Sequence[str], stems: dict[str, int], surfaces: dict[str, int]) -> np.ndarray:
        """(len(words), 2) ids of each word's stem (-1: none) and lower-cased surface, ids given in first-seen order."""
        out = np.empty((len(words), 2), np.int64)
        for n, word in enumerate(words):
            key = self._stem_cache.get(word, 0)
            if key == 0:
                key = self._stem_cache[word] = self.stem(word)
            if key is None:
                out[n] = -1
                continue
            out[n, 0] = stems.setdefault(key, len(stems))
            out[n, 1] = surfaces.setdefault(word.lower(), len(surfaces))
        return out

    def combined_mass(self, latents: Sequence[int], progress: bool = False) -> dict[int, Counter]:
        """Evidence of the top passages plus that of the sampled firing passages, each pool normalised to one:
        {latent: Counter(stem -> mass)}.

        One encoder pass per passage serves both pools and every concept that wants it (batched, only the
        wanted concepts' columns computed), and the per-word bookkeeping is done on arrays. Gives what
        :meth:`combined_mass_by_pool` gives, up to float rounding (tested).
        """
        from clsr.interpret.evidence import word_spans
        from clsr.progress import progress_bar

        latents = [int(l) for l in latents]
        pools = self.pools(latents)
        wanted: dict[int, list[int]] = defaultdict(list)  # row -> keys (position of the latent x 2 + pool)
        for pool, rows_for in enumerate(pools):
            for position, latent in enumerate(latents):
                for row in rows_for[latent].tolist():
                    wanted[row].append(position * 2 + pool)
        rows = sorted(wanted)
        keys_of = [np.asarray(wanted[row], np.int64) for row in rows]
        latent_array = np.asarray(latents, np.int64)
        stems: dict[str, int] = {}
        surfaces: dict[str, int] = {}
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        surface_parts: list[np.ndarray] = []
        bar = progress_bar(total=len(rows), desc="word evidence", unit="passage", enabled=progress)

        def consume(i: int, offsets: np.ndarray, contributions: np.ndarray) -> None:
            text = self.texts[rows[i]]
            spans = word_spans(text)
            scores = token_word_sums(spans, offsets, contributions - contributions.mean(0, keepdims=True))
            positive = np.clip(scores, 0, None)
            totals = positive.sum(0)
            keep = totals > 0
            shares = positive[:, keep] / totals[keep]
            ids = self._word_ids([text[a:b] for a, b in spans], stems, surfaces)
            word, column = np.nonzero((shares > 0) & (ids[:, :1] >= 0))
            parts.append((keys_of[i][keep][column], ids[word, 0], shares[word, column]))
            surface_parts.append(ids[word, 1])
            bar.update(1)

        with bar:
            self.explainer.batched_contributions([self.texts[row] for row in rows],
                                                 [latent_array[keys // 2] for keys in keys_of], consume,
                                                 batch_size=self.batch_size)
        stem_names = list(stems)
        surface_names = list(surfaces)
        surface_stem = np.full(len(surfaces), -1, np.int64)
        if parts:
            keys, stem_ids, values = (np.concatenate(column) for column in zip(*parts))
            surface_ids = np.concatenate(surface_parts)
            surface_stem[surface_ids] = stem_ids
            for surface, count in enumerate(np.bincount(surface_ids, minlength=len(surfaces)).tolist()):
                if count:
                    self._surfaces[stem_names[surface_stem[surface]]][surface_names[surface]] += count
        else:
            keys, stem_ids, values = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        if self.sample_passages:  # each pool's mass normalised to one, then the pools added
            totals = np.bincount(keys, weights=values, minlength=2 * len(latents))
            values = values / totals[keys]
        # Sum by (latent, stem): sort the pairs, add runs.
        pair = (keys // 2) * max(len(stem_names), 1) + stem_ids
        order = np.argsort(pair, kind="stable")
        pair, values = pair[order], values[order]
        cuts = np.flatnonzero(np.diff(pair)) + 1
        firsts = np.concatenate([[0], cuts]) if len(pair) else np.zeros(0, np.int64)
        sums = np.add.reduceat(values, firsts) if len(pair) else np.zeros(0)
        pair = pair[firsts]
        mass = {latent: Counter() for latent in latents}
        positions, stem_columns = pair // max(len(stem_names), 1), pair % max(len(stem_names), 1)
        bounds = np.searchsorted(positions, np.arange(len(latents) + 1))
        for position, latent in enumerate(latents):
            chunk = slice(bounds[position], bounds[position + 1])
            ranked = sorted(zip(sums[chunk].tolist(), stem_columns[chunk].tolist()),
                            key=lambda item: (-item[0], stem_names[item[1]]))
            mass[latent] = Counter({stem_names[stem]: value for value, stem in ranked})
        return mass

    def describe_latents(self, latents: Iterable[int], progress: bool = False) -> dict[int, dict]:
        """Labels for many concepts at once: one evidence pass over the passages they need, the simulator's word
        vectors embedded in one batch, then each concept's words chosen."""
        from clsr.progress import progress_bar

        latents = list(latents)
        mass = self.combined_mass(latents, progress=progress)
        candidates = {latent: self.candidates(latent, mass[latent]) for latent in latents}
        if self.simulator is not None:
            words = [word for found in candidates.values() for word in found[1]]
            self.simulator.word_vectors(list(dict.fromkeys(words)))
        with _one_blas_thread():  # small products: threads only wait on each other, the more so on a busy machine
            return {latent: self.label(latent, mass[latent], candidates[latent])
                    for latent in progress_bar(latents, desc="labelling concepts", unit="concept", enabled=progress)}


def _one_blas_thread():
    """A context in which numpy's BLAS runs one thread (threadpoolctl, when installed; else nothing changes)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def commonest(counts: Counter) -> str:
    """The most frequent key, ties to the alphabetically first: not `Counter.most_common`, whose ties go to the key
    counted first, which follows the order OpenVINO's concurrent batches finish in (ratio/ratios: the same counts,
    another label)."""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def token_word_sums(spans: Sequence[tuple[int, int]], offsets: np.ndarray, contributions: np.ndarray) -> np.ndarray:
    """:func:`clsr.interpret.evidence.word_scores` on arrays: (len(spans), C) sums of the token rows whose
    character offsets fall inside each word span (special and prefix tokens belong to no word)."""
    scores = np.zeros((len(spans), contributions.shape[1]), np.float64)
    if not spans:
        return scores
    starts = np.array([a for a, _ in spans])
    ends = np.array([b for _, b in spans])
    begin, finish = offsets[:, 0], offsets[:, 1]
    word = np.searchsorted(starts, begin, side="right") - 1
    valid = (finish > begin) & (begin >= 0) & (word >= 0)
    valid[valid] &= begin[valid] < ends[word[valid]]
    np.add.at(scores, word[valid], contributions[valid])
    return scores


# How many passages the evidence describer works on at most, besides each described concept's top passages. An index
# of up to this many is described whole, as before the bound (SciFact's 5,183 and NFCorpus's 3,633 passages, every
# collection the benchmarks and the README describe); a larger one on a seeded sample of this many plus every
# used concept's top passages (:func:`describe_subset`). 20,000 because a sample that size still gives a concept
# firing on 0.1% of the corpus 20 firing passages, its full sampled pool (`sample_passages`), while word choice
# judges a concept on at most 256 passages per stratum and contrast words need 5: more passages would change few
# labels. benchmarks/describe_bound.py measures what the sample costs in held-out AUC.
DESCRIBE_PASSAGES = 20_000
# Past the bound, word evidence (an encoder pass a passage, ~20 ms for a sentence and ~60 ms for a 256-token passage
# on 2 AVX2 cores) is read from each described concept's EVIDENCE_TOP strongest passages and from a fixed random pool
# of DESCRIBE_PASSAGES // EVIDENCE_POOL_SHARE of the sample (4,000), so it costs at most 2 x concepts + 4,000 passes
# (20,384 for the bundled SAE's 8,192), whatever the corpus. Taking each concept's 10 top passages and 20 of its own
# firing passages instead, as below the bound, cost 61,834 passes at 100k passages (benchmarks/build_scale.py).
EVIDENCE_TOP = 2
EVIDENCE_POOL_SHARE = 5
# The random stream of the sample: [seed, this], one no concept's stream ([seed, latent], [seed, latent, 1]) uses.
SUBSET_STREAM = 2**32


def concept_top_rows(latents: np.ndarray, activations: np.ndarray, top_passages: int,
                     concepts: Sequence[int] | None = None, chunk_rows: int = 65_536) -> np.ndarray:
    """Sorted unique rows that are among some concept's `top_passages` strongest passages (ties to the earlier
    passage, as :meth:`EvidenceDescriber.firing` and the catalogue order them), from top-K codes `latents` and
    `activations` (n, K) (an index's doc_codes); :func:`concept_top_postings`' rows."""
    return np.unique(concept_top_postings(latents, activations, top_passages, concepts, chunk_rows).rows)


class TopPostings(NamedTuple):
    """Each concept's strongest passages: parallel arrays sorted by latent, then strongest first, then row."""

    latents: np.ndarray  # (m,) int64
    rows: np.ndarray  # (m,) int64, into the codes
    values: np.ndarray  # (m,) float32 activations


def concept_top_postings(latents: np.ndarray, activations: np.ndarray, top_passages: int,
                         concepts: Sequence[int] | None = None, chunk_rows: int = 65_536) -> TopPostings:
    """Each concept's `top_passages` strongest passages (ties to the earlier passage) from top-K codes `latents` and
    `activations` (n, K). `concepts`: only these latents (default: every latent that fires somewhere). Read
    `chunk_rows` rows at a time, keeping each latent's best so far, so memory stays at a chunk plus (latents x
    `top_passages`) candidates however long the index (a memory map stays one)."""
    wanted = None if concepts is None else np.unique(np.asarray(list(concepts), np.int64))
    kept_rows, kept_latents, kept_values = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    for start in range(0, len(latents), chunk_rows):
        # read_rows hands a memory map's pages back: the scan does not leave the whole doc_codes/ resident.
        chunk_latents = read_rows(latents, start, min(start + chunk_rows, len(latents)), np.int64)
        chunk_values = read_rows(activations, start, min(start + chunk_rows, len(latents)), np.float32)
        fired = chunk_values > 0
        if wanted is not None:
            fired &= np.isin(chunk_latents, wanted)
        rows = np.concatenate([kept_rows, np.nonzero(fired)[0] + start])
        flat_latents = np.concatenate([kept_latents, chunk_latents[fired]])
        values = np.concatenate([kept_values, chunk_values[fired]])
        order = np.lexsort((rows, -values, flat_latents))  # by latent, strongest first, then the earlier passage
        rows, flat_latents, values = rows[order], flat_latents[order], values[order]
        first = np.searchsorted(flat_latents, flat_latents, side="left")  # where each posting's latent starts
        keep = np.arange(len(rows)) - first < top_passages
        kept_rows, kept_latents, kept_values = rows[keep], flat_latents[keep], values[keep]
    return TopPostings(kept_latents, kept_rows, kept_values)


def describe_subset(latents: np.ndarray, activations: np.ndarray, top_passages: int,
                    max_passages: int | None = DESCRIBE_PASSAGES, concepts: Sequence[int] | None = None,
                    seed: int = 0, top_rows: np.ndarray | None = None) -> np.ndarray | None:
    """The rows (sorted, into the codes' order) the evidence describer works on, or None for all of them: None when
    there are at most `max_passages` passages (or no bound, `max_passages` None); else a seeded random sample of
    `max_passages` rows plus every row among a described concept's `top_passages` strongest (`concepts`: the
    described latents, default every one that fires; :func:`concept_top_rows`), so that each described concept
    keeps the top passages the catalogue shows and its label is read from. Between `max_passages` and
    `max_passages` + len(concepts) x `top_passages` rows. `latents`, `activations`: (n, K) top-K codes; `top_rows`:
    their :func:`concept_top_rows`, when already known. Raises
    ValueError for a bound below 1."""
    n = len(latents)
    if max_passages is None or n <= max_passages:
        return None
    if max_passages < 1:
        raise ValueError(f"max_passages must be at least 1, not {max_passages}")
    sample = subset_sample(n, max_passages, seed)
    if top_rows is None:  # a caller that has scanned the codes already passes them (`build_catalogue`)
        top_rows = concept_top_rows(latents, activations, top_passages, concepts)
    return np.union1d(sample, top_rows).astype(np.int64)


def subset_sample(n: int, max_passages: int, seed: int = 0) -> np.ndarray:
    """(max_passages,) the seeded random sample of :func:`describe_subset` among `n` rows, in the order drawn (so any
    prefix is itself a uniform sample)."""
    return np.random.default_rng([seed, SUBSET_STREAM]).choice(n, size=max_passages, replace=False)


def evidence_pool(n: int, subset_rows: np.ndarray, max_passages: int, seed: int = 0) -> np.ndarray:
    """Sorted positions, within `subset_rows` (:func:`describe_subset`'s rows of an `n`-row index), of the fixed random
    pool that gives word evidence past the bound: the first ``max_passages // EVIDENCE_POOL_SHARE`` (at least one) of
    the subset's sample. Raises ValueError if `subset_rows` lacks a sampled row."""
    pool = np.sort(subset_sample(n, max_passages, seed)[:max(1, max_passages // EVIDENCE_POOL_SHARE)])
    positions = np.searchsorted(subset_rows, pool)
    found = subset_rows[np.minimum(positions, len(subset_rows) - 1)] if len(subset_rows) else pool[:0]
    if not np.array_equal(found, pool):
        raise ValueError("the subset rows do not hold the sample they were drawn with")
    return positions.astype(np.int64)


def evidence_describer_for(index_dir, texts: dict[str, str], stemmer, top_passages: int = 10,
                           simulator: str = "embedding", embeddings: np.ndarray | None = None,
                           max_passages: int | None = DESCRIBE_PASSAGES, seed: int = 0,
                           top_rows: np.ndarray | None = None,
                           **options) -> EvidenceDescriber:
    """An EvidenceDescriber over a concept index's passages (`texts` by docid, in corpus order), with the
    index's encoder and SAE.

    `simulator` is ``"embedding"`` (labels chosen for :class:`EmbeddingSimulator` over the index's dense
    encoder; the passages' embeddings are `embeddings`, in the index's order, or come from the embedding
    cache, or are encoded once) or
    ``"keywords"`` (the keyword count). An index of more than `max_passages` passages (default
    :data:`DESCRIBE_PASSAGES`; None: no bound) is described from a subset (:func:`describe_subset`, seeded with
    `seed`; the describer's ``corpus_rows``): only the subset's rows of `embeddings` are read (a memory map stays
    one), or only its passages are encoded (not cached), and only its texts are cut and stemmed; each label's
    ``df_share`` is still the whole index's; `top_rows`: :func:`concept_top_rows` of the index's codes for
    `top_passages`, when the caller has them (else the codes are scanned for them). `options` go to
    :func:`clsr.index.load_concept_encoder`
    (e.g. ``dtype``). Raises ValueError for another simulator, or embeddings of another length than the index.
    """
    from clsr.data import Document
    from clsr.encode.dense import cut_texts, encode_corpus
    from clsr.index import DocCodes
    from clsr.interpret.evidence import EvidenceExplainer
    from clsr.search.concept_encoder import load_concept_encoder

    if simulator not in ("embedding", "keywords"):
        raise ValueError(f"simulator must be 'embedding' or 'keywords', not {simulator!r}")
    codes = DocCodes(index_dir)
    rows = describe_subset(codes.latents, codes.activations, top_passages, max_passages, seed=seed,
                           top_rows=top_rows)
    explainer = EvidenceExplainer.for_encoder(load_concept_encoder(index_dir, **options))
    if rows is not None:
        return _subset_describer(explainer, codes, rows, texts, stemmer, top_passages, simulator, embeddings,
                                 max_passages, seed)
    extra = {}
    if simulator == "embedding" and embeddings is not None:
        if len(embeddings) != len(codes.ids):
            raise ValueError(f"{len(embeddings)} embeddings for an index of {len(codes.ids)} passages")
        extra = {"simulator": EmbeddingSimulator(explainer.dense.encode), "embeddings": np.asarray(embeddings)}
    elif simulator == "embedding":
        # The whole corpus in its own order when the index holds all of it, so the embedding cache's key matches
        # the one indexing wrote; else only the index's passages (a slice need not encode the whole corpus).
        whole = len(texts) == len(codes.ids) and set(texts) == set(codes.ids)
        documents = ([Document(docid, text) for docid, text in texts.items()] if whole
                     else [Document(docid, texts.get(docid, "")) for docid in codes.ids])
        encoded = encode_corpus(explainer.dense, documents, progress=False)
        row = {docid: n for n, docid in enumerate(encoded.ids)}
        extra = {"simulator": EmbeddingSimulator(explainer.dense.encode),
                 "embeddings": np.asarray(encoded.embeddings)[[row[docid] for docid in codes.ids]]}
    # Cut as the encoder cuts (`cut_texts`): a 21 MB passage would otherwise be scanned and tokenised whole (field
    # case 11: 12.7 GB). The embedding cache above is keyed by the uncut texts, as indexing wrote it.
    passages, _ = cut_texts([texts.get(docid, "") for docid in codes.ids], explainer.dense.config.max_length)
    return EvidenceDescriber(explainer, passages, codes.latents, codes.activations, stemmer,
                             top_passages=top_passages, **extra)


def _subset_describer(explainer, codes, rows: np.ndarray, texts: dict[str, str], stemmer, top_passages: int,
                      simulator: str, embeddings: np.ndarray | None, max_passages: int,
                      seed: int) -> EvidenceDescriber:
    """:func:`evidence_describer_for` past the bound: an EvidenceDescriber over the index's `rows` (sorted) alone,
    its ``df_shares`` the whole index's, its word evidence from the :func:`evidence_pool` and each concept's
    :data:`EVIDENCE_TOP` strongest passages. Raises ValueError for embeddings of another length than the index."""
    from clsr.encode.dense import cut_texts

    ids = [codes.ids[row] for row in rows.tolist()]
    latents = np.asarray(codes.latents[rows], np.int64)
    activations = np.asarray(codes.activations[rows], np.float32)
    extra = {}
    if simulator == "embedding":
        if embeddings is not None and len(embeddings) != len(codes.ids):
            raise ValueError(f"{len(embeddings)} embeddings for an index of {len(codes.ids)} passages")
        # The subset's rows of a memory map, or the subset encoded: never the whole corpus's (n, d) in memory. Not
        # cached: the embedding cache is keyed by the whole corpus, which this is not.
        chosen = (read_subset(embeddings, rows) if embeddings is not None
                  else explainer.dense.encode_documents([texts.get(docid, "") for docid in ids]))
        extra = {"simulator": EmbeddingSimulator(explainer.dense.encode), "embeddings": np.asarray(chosen)}
    # Only the subset's texts are cut, as the encoder cuts them (see evidence_describer_for), and later stemmed.
    passages, _ = cut_texts([texts.get(docid, "") for docid in ids], explainer.dense.config.max_length)
    return EvidenceDescriber(explainer, passages, latents, activations, stemmer, top_passages=top_passages,
                             corpus_rows=rows, df_shares=corpus_df_shares(codes.latents, codes.activations),
                             evidence_pool=evidence_pool(len(codes.ids), rows, max_passages, seed), **extra)


def read_subset(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), d) the `rows` of (n, d) `embeddings` in memory, a memory map's pages handed back after."""
    chosen = np.asarray(embeddings[rows])
    release(embeddings)
    return chosen


def corpus_df_shares(latents: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """(max latent + 1,) the share of the passages each latent fires on, from (n, K) top-K codes, read in chunks
    of rows so that a memory-mapped index of millions of passages is never copied whole."""
    n = len(latents)
    counts = np.zeros(0, np.int64)
    for start in range(0, n, 65_536):
        chunk_latents = read_rows(latents, start, min(start + 65_536, n), np.int64)
        fired = chunk_latents[read_rows(activations, start, min(start + 65_536, n)) > 0]
        found = np.bincount(fired, minlength=len(counts))
        found[:len(counts)] += counts
        counts = found
    return counts / max(n, 1)
