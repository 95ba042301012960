"""Descriptions from word evidence: which words make a concept fire, not which words its passages contain.

In the spirit of Neuron-to-Graph (Foote et al. 2023): for each concept, the word-level evidence
(``clsr.evidence``, pooling method) of its top passages, and of a seeded sample of the other
passages where it fires (what makes it fire at all, not only strongly), is aggregated by stem, each
passage voting with its positive evidence normalised to one, and the two pools weighing equally.
The strongest stems are *candidates*; the label keeps, greedily, the candidates whose presence best
predicts the concept in the corpus the describer sees (mean of two ROC AUCs: the passage fires, and
the passage is in the concept's top decile), at least ``min_keywords`` (a single rare word fits a
tail concept's few passages but does not generalise) and up to ``max_keywords``, stopping when a
keyword no longer helps. So a label is both a cause (evidence) and a predictor (checked against
activations). The defaults were chosen on SciFact's describe half (benchmarks/descriptions.py).

Two plain-language markers:

* ``broad: ...`` when the concept fires on at least ``broad_share`` of the passages;
* ``unclear: ...`` when even the best label predicts it poorly (AUC below ``min_auc`` on the
  describer's own corpus); the words after it are the strongest evidence, not a faithful label.

:func:`description_keywords` turns any description back into its keywords (markers dropped), so
faithfulness is measured the same way for every describer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

BROAD = "broad: "
UNCLEAR = "unclear: "


def description_keywords(description: str) -> list[str]:
    """The keywords of a description ("broad: a, b" -> ["a", "b"]), markers and empty parts dropped."""
    text = description
    for marker in (BROAD, UNCLEAR):
        if text.startswith(marker):
            text = text[len(marker):]
    return [word.strip() for word in text.split(",") if word.strip()]


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


class EvidenceDescriber:
    """Labels concepts of one corpus from word evidence, checked against where they fire.

    `texts` and the code arrays (`latents`, `activations`: (n, K) top-K codes, as an index's
    doc_codes) describe the same passages in the same order; `explainer` is a
    :class:`clsr.evidence.EvidenceExplainer` for the index's encoder and SAE; `stemmer` maps a word to
    its stem or None (e.g. ``KeywordDescriber.stem``: Lucene's English analyser).
    """

    def __init__(self, explainer, texts: Sequence[str], latents: np.ndarray, activations: np.ndarray, stemmer,
                 *, top_passages: int = 10, sample_passages: int = 20, candidates: int = 40, min_keywords: int = 4,
                 max_keywords: int = 12, broad_share: float = 0.2, min_auc: float = 0.65, seed: int = 0):
        self.explainer, self.texts, self.stem = explainer, list(texts), stemmer
        self.latents, self.activations = np.asarray(latents, np.int64), np.asarray(activations, np.float32)
        self.top_passages, self.sample_passages, self.candidates = top_passages, sample_passages, candidates
        self.seed = seed
        self.min_keywords, self.max_keywords = min_keywords, max_keywords
        self.broad_share, self.min_auc = broad_share, min_auc
        self._stems: list[frozenset[str]] | None = None
        self._postings: dict[str, np.ndarray] | None = None
        self._surfaces: dict[str, Counter] = defaultdict(Counter)

    def passage_stems(self) -> list[frozenset[str]]:
        """Each passage's set of stems (computed once; the presence test every label is scored by)."""
        if self._stems is None:
            from .evidence import WORD_PATTERN

            self._stems = [frozenset(s for s in map(self.stem, WORD_PATTERN.findall(t)) if s) for t in self.texts]
        return self._stems

    def presence(self, stems: Sequence[str]) -> np.ndarray:
        """(passages, len(stems)) bool: which passages contain each stem (from an inverted index built once)."""
        if self._postings is None:
            rows: dict[str, list[int]] = defaultdict(list)
            for row, passage in enumerate(self.passage_stems()):
                for stem in passage:
                    rows[stem].append(row)
            self._postings = {stem: np.array(r, np.int64) for stem, r in rows.items()}
        present = np.zeros((len(self.texts), len(stems)), bool)
        for j, stem in enumerate(stems):
            present[self._postings.get(stem, np.zeros(0, np.int64)), j] = True
        return present

    def activation_column(self, latent: int) -> np.ndarray:
        """(n,) the concept's activation in each passage's code (0 where it is not in the code)."""
        return np.where(self.latents == latent, self.activations, 0).max(axis=1)

    def top_rows(self, column: np.ndarray) -> list[int]:
        firing = np.flatnonzero(column > 0)
        return firing[np.argsort(-column[firing], kind="stable")[:self.top_passages]].tolist()

    def evidence_mass(self, latents: Iterable[int], rows_for: dict[int, list[int]] | None = None) -> dict[int, Counter]:
        """{latent: Counter(stem -> evidence mass)} over each latent's passages (by default its top passages,
        else `rows_for[latent]`); one encoder pass per passage, shared by every latent that wants it."""
        from .evidence import word_scores, word_spans

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

    def label(self, latent: int, mass: Counter) -> dict:
        """{"description", "keywords", "auc_fires", "auc_strong", "kind"} for one concept."""
        column = self.activation_column(latent)
        fires, strong = column > 0, strong_labels(column)
        candidates = [stem for stem, _ in mass.most_common(self.candidates)]
        present = self.presence(candidates)
        chosen: list[int] = []
        score = np.zeros(len(self.texts), np.int64)
        best = (0.0, None, None)
        while len(chosen) < self.max_keywords and candidates:
            trials = []
            for j in range(len(candidates)):
                if j in chosen:
                    continue
                trial = score + present[:, j]
                a_fires, a_strong = count_auc(trial, fires), count_auc(trial, strong)
                if a_fires is None or a_strong is None:
                    continue
                trials.append(((a_fires + a_strong) / 2, j, a_fires, a_strong))
            if not trials:
                break
            value, j, a_fires, a_strong = max(trials, key=lambda t: (t[0], -t[1]))
            if len(chosen) >= self.min_keywords and value <= best[0] + 0.002:  # a keyword must earn its place
                break
            chosen.append(j)
            score = score + present[:, j]
            best = (value, a_fires, a_strong)
        keywords = [self._surfaces[candidates[j]].most_common(1)[0][0] for j in chosen]
        share = float(fires.mean()) if len(fires) else 0.0
        kind = "broad" if share >= self.broad_share else "specific"
        if best[0] < self.min_auc:
            kind = "unclear"
        prefix = {"broad": BROAD, "unclear": UNCLEAR}.get(kind, "")
        return {"description": prefix + ", ".join(keywords) if keywords else "", "keywords": keywords,
                "auc_fires": None if best[1] is None else round(best[1], 4),
                "auc_strong": None if best[2] is None else round(best[2], 4), "kind": kind,
                "df_share": round(share, 4)}

    def sampled_rows(self, latent: int, column: np.ndarray) -> list[int]:
        """A seeded sample of the passages where the concept fires, other than its top passages."""
        top = set(self.top_rows(column))
        rest = [int(row) for row in np.flatnonzero(column > 0) if row not in top]
        rng = np.random.default_rng([self.seed, latent])  # per concept: the same sample whatever else is described
        return sorted(int(r) for r in rng.choice(rest, size=min(self.sample_passages, len(rest)), replace=False)) if rest else []

    def combined_mass(self, latents: Sequence[int]) -> dict[int, Counter]:
        """Evidence of the top passages plus that of the sampled firing passages, each pool normalised to one."""
        top = self.evidence_mass(latents)
        if not self.sample_passages:
            return top
        sampled = self.evidence_mass(latents, {l: self.sampled_rows(l, self.activation_column(l)) for l in latents})

        def normalised(counter: Counter) -> Counter:
            total = sum(counter.values()) or 1.0
            return Counter({stem: value / total for stem, value in counter.items()})

        return {l: normalised(top[l]) + normalised(sampled[l]) for l in latents}

    def describe_latents(self, latents: Iterable[int], progress: bool = False) -> dict[int, dict]:
        """Labels for many concepts at once (each passage is encoded once, for every concept that wants it)."""
        from tqdm.auto import tqdm

        latents = list(latents)
        mass = self.combined_mass(latents)
        return {latent: self.label(latent, mass[latent])
                for latent in tqdm(latents, desc="labelling concepts", unit="concept", disable=not progress)}


def evidence_describer_for(index_dir, texts: dict[str, str], stemmer, top_passages: int = 10,
                           **options) -> EvidenceDescriber:
    """An EvidenceDescriber over a concept index's passages (`texts` by docid), with the index's encoder and SAE.

    `options` go to :func:`clsr.search.load_concept_encoder` (e.g. ``dtype``).
    """
    from .evidence import EvidenceExplainer
    from .index import DocCodes
    from .index import load_concept_encoder

    codes = DocCodes(index_dir)
    explainer = EvidenceExplainer.for_encoder(load_concept_encoder(index_dir, **options))
    return EvidenceDescriber(explainer, [texts.get(docid, "") for docid in codes.ids], codes.latents,
                             codes.activations, stemmer, top_passages=top_passages)
