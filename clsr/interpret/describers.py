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

import numpy as np

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
        words, contrast = parse_description(description)
        passages = unit_rows(passage_embeddings)
        if not words:
            return np.zeros(len(passages))
        direction = self.word_vectors(words).mean(0)
        if contrast:
            direction = direction - self.word_vectors(contrast).mean(0)
        return passages @ direction


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


class EvidenceDescriber:
    """Labels concepts of one corpus from word evidence, checked against where they fire.

    `texts` and the code arrays (`latents`, `activations`: (n, K) top-K codes, as an index's
    doc_codes) describe the same passages in the same order; `explainer` is a
    :class:`clsr.interpret.evidence.EvidenceExplainer` for the index's encoder and SAE; `stemmer` maps a word to
    its stem or None (e.g. ``KeywordDescriber.stem``: Lucene's English analyser). With a `simulator`
    (:class:`EmbeddingSimulator`) and the passages' dense `embeddings` (n, d), labels are chosen for
    that simulator and may carry contrast words; without, for the keyword count. Candidate words
    must occur in at least `candidate_min_df` passages, contrast words in `contrast_min_df`.
    """

    def __init__(self, explainer, texts: Sequence[str], latents: np.ndarray, activations: np.ndarray, stemmer,
                 *, simulator: EmbeddingSimulator | None = None, embeddings: np.ndarray | None = None,
                 top_passages: int = 10, sample_passages: int = 20, candidates: int = 40,
                 contrast_candidates: int = 30, min_keywords: int = 4, max_keywords: int = 12,
                 max_contrast: int = 6, contrast_min_df: int = 5, candidate_min_df: int = 3,
                 broad_share: float = 0.2, min_auc: float = 0.65, seed: int = 0):
        if simulator is not None and (embeddings is None or len(embeddings) != len(texts)):
            raise ValueError("the embedding simulator needs one dense embedding per passage")
        self.explainer, self.texts, self.stem = explainer, list(texts), stemmer
        self.latents, self.activations = np.asarray(latents, np.int64), np.asarray(activations, np.float32)
        self.simulator = simulator
        self.embeddings = None if embeddings is None else unit_rows(embeddings)
        self.top_passages, self.sample_passages, self.candidates = top_passages, sample_passages, candidates
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
                return surfaces[stem].most_common(1)[0][0]
        self.passage_stems()
        return self._corpus_surfaces[stem].most_common(1)[0][0] if self._corpus_surfaces.get(stem) else stem

    def activation_column(self, latent: int) -> np.ndarray:
        """(n,) the concept's activation in each passage's code (0 where it is not in the code)."""
        return np.where(self.latents == latent, self.activations, 0).max(axis=1)

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

    def label(self, latent: int, mass: Counter) -> dict:
        """{"description", "keywords", "contrast", "auc_fires", "auc_strong", "kind", "df_share", "simulator"}.

        The AUCs are the label's own, under its simulator, on the corpus it was described from.
        """
        column = self.activation_column(latent)
        fires, strong = column > 0, strong_labels(column)
        if self.candidate_min_df > 1:  # a word in one or two passages reads as noise, however well it fits
            self.presence([])
            mass = Counter({stem: value for stem, value in mass.items()
                            if len(self._postings.get(stem, ())) >= self.candidate_min_df})
        positive = [stem for stem, _ in mass.most_common(self.candidates)]
        words = [self.surface(stem) for stem in positive]
        if self.simulator is None:
            columns, signs = self.presence(positive).astype(np.float64), np.ones(len(positive))
            max_contrast = 0
        else:
            self.passage_stems()  # the corpus surfaces of the contrast stems
            taken = set(positive) | set(words)
            contrast = [self.surface(stem, evidence=False) for stem in self.contrast_stems(fires) if stem not in taken]
            contrast = [word for word in dict.fromkeys(contrast) if word not in taken]
            signs = np.array([1.0] * len(words) + [-1.0] * len(contrast))
            words = words + contrast
            columns = self.embeddings @ self.simulator.word_vectors(words).T if words else np.zeros((len(fires), 0))
            max_contrast = self.max_contrast
        chosen, (a_fires, a_strong) = choose_words(columns, signs, [fires, strong], min_words=self.min_keywords,
                                                   max_words=self.max_keywords, max_contrast=max_contrast)
        keywords = [words[j] for j in chosen if signs[j] > 0]
        excluded = [words[j] for j in chosen if signs[j] < 0]
        share = float(fires.mean()) if len(fires) else 0.0
        kind = "broad" if share >= self.broad_share else "specific"
        if a_fires is None or (a_fires + a_strong) / 2 < self.min_auc or len(keywords) < self.min_keywords:
            kind = "unclear"  # too few words to be a label is as unclear as a label that predicts poorly
        prefix = {"broad": BROAD, "unclear": UNCLEAR}.get(kind, "")
        description = (prefix + ", ".join(keywords) + (CONTRAST + ", ".join(excluded) if excluded else "")
                       if keywords else "")
        return {"description": description, "keywords": keywords, "contrast": excluded,
                "auc_fires": None if a_fires is None else round(a_fires, 4),
                "auc_strong": None if a_strong is None else round(a_strong, 4), "kind": kind,
                "df_share": round(share, 4), "simulator": "keywords" if self.simulator is None else "embedding"}

    def sampled_rows(self, latent: int, column: np.ndarray) -> list[int]:
        """A seeded sample of the passages where the concept fires, other than its top passages."""
        top = set(self.top_rows(column))
        rest = [int(row) for row in np.flatnonzero(column > 0) if row not in top]
        rng = np.random.default_rng([self.seed, latent])  # per concept: the same sample whatever else is described
        if not rest:
            return []
        return sorted(int(r) for r in rng.choice(rest, size=min(self.sample_passages, len(rest)), replace=False))

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
        from clsr.progress import progress_bar

        latents = list(latents)
        mass = self.combined_mass(latents)
        return {latent: self.label(latent, mass[latent])
                for latent in progress_bar(latents, desc="labelling concepts", unit="concept", enabled=progress)}


def evidence_describer_for(index_dir, texts: dict[str, str], stemmer, top_passages: int = 10,
                           simulator: str = "embedding", **options) -> EvidenceDescriber:
    """An EvidenceDescriber over a concept index's passages (`texts` by docid, in corpus order), with the
    index's encoder and SAE.

    `simulator` is ``"embedding"`` (labels chosen for :class:`EmbeddingSimulator` over the index's dense
    encoder; the passages' embeddings come from the embedding cache, or are encoded once) or
    ``"keywords"`` (the keyword count). `options` go to :func:`clsr.index.load_concept_encoder`
    (e.g. ``dtype``). Raises ValueError for another simulator.
    """
    from clsr.data import Document
    from clsr.encode.dense import encode_corpus
    from clsr.index import DocCodes
    from clsr.interpret.evidence import EvidenceExplainer
    from clsr.search.concept_encoder import load_concept_encoder

    if simulator not in ("embedding", "keywords"):
        raise ValueError(f"simulator must be 'embedding' or 'keywords', not {simulator!r}")
    codes = DocCodes(index_dir)
    explainer = EvidenceExplainer.for_encoder(load_concept_encoder(index_dir, **options))
    extra = {}
    if simulator == "embedding":
        # The whole corpus in its own order when the index holds all of it, so the embedding cache's key matches
        # the one indexing wrote; else only the index's passages (a slice need not encode the whole corpus).
        whole = len(texts) == len(codes.ids) and set(texts) == set(codes.ids)
        documents = ([Document(docid, text) for docid, text in texts.items()] if whole
                     else [Document(docid, texts.get(docid, "")) for docid in codes.ids])
        encoded = encode_corpus(explainer.dense, documents, progress=False)
        row = {docid: n for n, docid in enumerate(encoded.ids)}
        extra = {"simulator": EmbeddingSimulator(explainer.dense.encode),
                 "embeddings": np.asarray(encoded.embeddings)[[row[docid] for docid in codes.ids]]}
    return EvidenceDescriber(explainer, [texts.get(docid, "") for docid in codes.ids], codes.latents,
                             codes.activations, stemmer, top_passages=top_passages, **extra)
