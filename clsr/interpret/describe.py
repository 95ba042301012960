"""The concept catalogue: what each SAE concept fires on in a corpus, and a short description.

For every latent of a concept index: its document frequency and rank, its region (head, torso or
tail), its mean and max activation, its top activating passages, and a description. The offline
describer (the default) labels a concept with the keywords that best separate its top passages
from the rest of the corpus: c-TF-IDF over stemmed, stopword-free tokens (Lucene's English
analyzer), each stem shown as its most frequent surface form in those passages.

Regions, by document frequency: concepts sorted by df, **head** = the most frequent ones that
together hold half of all postings, **torso** = the next ones up to 90%, **tail** = the rest
(rare concepts), **unused** = df 0 on this corpus.

The catalogue is ``concepts.jsonl`` in the index folder. ``clsr index`` writes it when it builds a
concept index (the evidence describer, :data:`DEFAULT_DESCRIBER`; ``--no-describe`` skips it), and an
index without one is described on first use (:func:`ensure_catalogue`) or by ``clsr describe --index IDX``.

Each entry records which SAE described it (``described_with``: the SAE's name and sha256). After
adaptation (``clsr adapt-sae``), a concept whose decoder direction stayed above cosine 0.9 keeps the base
SAE's description, marked ``inherited``, until the corpus describes it (:func:`inherit_catalogue`,
:func:`merge_inherited`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clsr.interpret.describers import DESCRIBE_PASSAGES

CATALOGUE_NAME = "concepts.jsonl"
DEFAULT_DESCRIBER = "evidence"  # what `clsr index` and first use describe with (benchmarks/descriptions.py)
HEAD_SHARE, TORSO_SHARE = 0.5, 0.9
WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


class LlmDescriber:
    """Labels from any OpenAI-compatible chat endpoint (``{base_url}/chat/completions``); opt-in only.

    It is shown a concept's top passages and asked for a 1-8 word label. clsr never builds one
    unless asked (``clsr describe --llm-url ... --llm-model ...``), so by default nothing is sent.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 passage_chars: int = 400):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout, self.passage_chars = model, api_key, timeout, passage_chars

    def describe(self, passages: Sequence[str]) -> str:
        import urllib.request

        listing = "\n".join(f"{n}. {text[:self.passage_chars]}" for n, text in enumerate(passages, 1))
        body = {"model": self.model, "temperature": 0, "messages": [
            {"role": "system", "content": "You name the common theme of passages that activate one feature of a "
                                          "text embedding model. Answer with a label of 1 to 8 words, nothing else."},
            {"role": "user", "content": f"Passages:\n{listing}\n\nLabel:"}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            answer = json.loads(response.read())["choices"][0]["message"]["content"]
        return " ".join(answer.strip().strip('"').split()[:8])


class ConceptEntry(NamedTuple):
    concept: str
    latent: int
    df: int
    rank: int  # 1 = the most frequent concept
    region: str  # head, torso, tail or unused
    mean_activation: float
    max_activation: float
    top_passages: list[dict]  # [{"docid", "activation", "snippet"}], strongest first
    description: str
    # The evidence describer's check of its own label: {"kind": specific|broad|unclear, "auc_fires", "auc_strong",
    # "df_share", "simulator", ...} on the corpus it described; None for the other describers.
    label: dict | None = None
    # The SAE whose concept this description was made for: {"sae": name, "sha256"}; None in catalogues written
    # before clsr recorded it.
    described_with: dict | None = None
    # True when the description is the base SAE's, kept through adaptation (the decoder direction stayed above
    # cosine 0.9) and not yet replaced by one from this corpus.
    inherited: bool = False


def regions(df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, region) per latent: rank 1 = highest df; regions by cumulative share of postings."""
    order = np.argsort(-df, kind="stable")
    rank = np.empty(len(df), np.int64)
    rank[order] = np.arange(1, len(df) + 1)
    share = np.cumsum(df[order]) / max(df.sum(), 1)
    # A concept is head while the postings of all more frequent ones are below half of the total.
    before = np.concatenate([[0.0], share[:-1]])
    region_sorted = np.where(before < HEAD_SHARE, "head", np.where(before < TORSO_SHARE, "torso", "tail"))
    region = np.empty(len(df), dtype=object)
    region[order] = region_sorted
    region[df == 0] = "unused"
    return rank, region


class KeywordDescriber:
    """c-TF-IDF keywords of a concept's top passages against the corpus (no network, no model)."""

    def __init__(self, corpus_texts: Iterable[str], keywords: int = 4):
        from clsr.jvm import pyserini_lucene

        pyserini_lucene()
        from pyserini.analysis import Analyzer, get_lucene_analyzer

        self._analyzer = Analyzer(get_lucene_analyzer(stemming=True, stopwords=True))
        self._stems: dict[str, str | None] = {}
        self.keywords = keywords
        document_frequency: Counter = Counter()
        self.documents = 0
        for text in corpus_texts:
            document_frequency.update({stem for stem, _ in self.tokens(text)})
            self.documents += 1
        self.document_frequency = document_frequency

    def stem(self, word: str) -> str | None:
        lowered = word.lower()
        if lowered not in self._stems:
            analysed = self._analyzer.analyze(lowered)
            self._stems[lowered] = analysed[0] if len(analysed) == 1 and len(analysed[0]) > 2 else None
        return self._stems[lowered]

    def tokens(self, text: str) -> list[tuple[str, str]]:
        """(stem, surface word) pairs, stopwords and very short words left out."""
        pairs = []
        for word in WORD.findall(text):
            stem = self.stem(word)
            if stem is not None:
                pairs.append((stem, word.lower()))
        return pairs

    def describe(self, passages: Sequence[str]) -> str:
        term_frequency: Counter = Counter()
        passage_count: Counter = Counter()
        surfaces: dict[str, Counter] = {}
        for text in passages:
            tokens = self.tokens(text)
            passage_count.update({stem for stem, _ in tokens})
            for stem, surface in tokens:
                term_frequency[stem] += 1
                surfaces.setdefault(stem, Counter())[surface] += 1
        # Terms must recur across the concept's passages, not just repeat within one.
        weights = {stem: tf * math.log(1 + self.documents / self.document_frequency.get(stem, 1))
                   for stem, tf in term_frequency.items() if passage_count[stem] >= min(2, len(passages))}
        best = sorted(weights, key=lambda stem: (-weights[stem], stem))[:self.keywords]
        return ", ".join(surfaces[stem].most_common(1)[0][0] for stem in best)


def build_catalogue(index_dir: str | os.PathLike, *, corpus: str | None = None, top_passages: int = 10,
                    snippet_chars: int = 160, describer=None, progress: bool = True,
                    embeddings: np.ndarray | None = None,
                    max_passages: int | None = DESCRIBE_PASSAGES) -> list[ConceptEntry]:
    """The catalogue of every latent of a concept index, described with the offline describer by default.

    The passages' texts come from `corpus`, by default the source recorded in the index's manifest.
    `describer` is anything with ``describe(passages) -> str`` (KeywordDescriber, LlmDescriber), or
    ``"evidence"`` for :class:`clsr.interpret.describers.EvidenceDescriber` (word evidence of the top
    passages, checked against activations with the embedding simulator; it labels every used concept
    in one pass over the corpus). `embeddings`: the passages' dense embeddings in the index's order, when the
    caller has them (else the evidence describer reads them from the embedding cache, or encodes them).

    `max_passages` bounds the evidence describer's cost: an index of more passages than that (default
    :data:`clsr.interpret.describers.DESCRIBE_PASSAGES`; None: no bound) is described from a seeded sample of
    `max_passages` passages plus every used concept's `top_passages`
    (:func:`clsr.interpret.describers.describe_subset`): its embeddings, stems, sampled firing passages and label
    AUCs are the subset's, so the encoder passes stop growing with the corpus (at most n_latents x `top_passages`
    + `max_passages`). The entries' df, rank, region, activations and top passages are the whole index's either
    way, as is each label's df_share; at or below the bound nothing changes.
    """
    import textwrap

    from clsr.data import iter_corpus, load_corpus
    from clsr.encode.dense import EncoderConfig, cut_texts
    from clsr.index import DocCodes, read_manifest
    from clsr.index.concepts import concept_term
    from clsr.interpret.describers import concept_top_postings, subset_sample
    from clsr.progress import progress_bar

    manifest = read_manifest(index_dir)
    described_with = {"sae": manifest.sae.name, "sha256": manifest.sae.sha256}
    codes = DocCodes(index_dir)
    n_latents = manifest.sae.n_latents
    # Read a chunk of rows at a time, so a memory-mapped doc_codes/ of millions of passages is never copied whole.
    df, activation_sum, activation_max = code_statistics(codes.latents, codes.activations, n_latents)
    top = concept_top_postings(codes.latents, codes.activations, top_passages)
    starts = np.searchsorted(top.latents, np.arange(n_latents + 1))
    rank, region = regions(df)

    corpus = corpus or manifest.source
    if not corpus:
        from clsr.index import InvalidIndexError

        raise InvalidIndexError(f"{index_dir}'s manifest names no corpus; give the passages with --corpus")
    bounded = describer == "evidence" and max_passages is not None and len(codes.ids) > max_passages
    if bounded:  # only the texts the describer's subset and the snippets read: the sample and the top passages
        wanted = {codes.ids[row] for row in np.union1d(subset_sample(len(codes.ids), max_passages),
                                                       top.rows).tolist()}
        texts = {d.id: d.text for d in iter_corpus(corpus) if d.id in wanted}
    else:
        texts = {d.id: d.text for d in load_corpus(corpus)}
    labels, cut = None, {}
    if describer == "evidence":
        from clsr.interpret.describers import evidence_describer_for

        # Only the stemmer: the keyword describer's document frequencies (a pass over the corpus) are not used.
        # The evidence describer takes the uncut texts, which key the embedding cache, and cuts those it reads.
        describer = evidence_describer_for(index_dir, texts, KeywordDescriber(()).stem, top_passages,
                                           embeddings=embeddings, max_passages=max_passages,
                                           top_rows=np.unique(top.rows))  # no second scan of the codes
        labels = describer.describe_latents(np.flatnonzero(df).tolist(), progress=progress)
    else:
        # Passages cut as the encoder cuts them (`cut_texts`), for the describers that read them whole.
        max_length = EncoderConfig.from_dict(manifest.encoder).max_length
        cut = dict(zip(texts, cut_texts(list(texts.values()), max_length)[0]))
    describer = describer or KeywordDescriber(cut.values())
    by_latent_rows, by_latent_values = top.rows, top.values
    entries = []
    for latent in progress_bar(range(n_latents), desc="describing concepts", unit="concept", enabled=progress):
        chosen = range(starts[latent], starts[latent + 1])  # at most top_passages, strongest first
        passages = [(codes.ids[by_latent_rows[i]], float(by_latent_values[i])) for i in chosen]
        entries.append(ConceptEntry(
            concept=concept_term(latent), latent=latent, df=int(df[latent]), rank=int(rank[latent]),
            region=str(region[latent]), mean_activation=round(float(activation_sum[latent] / max(df[latent], 1)), 5),
            max_activation=round(float(activation_max[latent]), 5),
            top_passages=[{"docid": docid, "activation": round(value, 5),
                           # Cut first: shortening a whole passage to 160 characters splits all of it into words.
                           "snippet": textwrap.shorten(texts.get(docid, "")[:4 * snippet_chars], snippet_chars,
                                                       placeholder="...")}
                          for docid, value in passages],
            description=(labels[latent]["description"] if labels is not None and latent in labels
                         else describer.describe([cut.get(docid, "") for docid, _ in passages]) if passages else ""),
            label=({k: labels[latent][k] for k in LABEL_FIELDS if k in labels[latent]}
                   if labels is not None and latent in labels else None),
            described_with=described_with if passages else None))
    inherited = inherited_catalogue(index_dir)
    return merge_inherited(entries, inherited) if inherited else entries


def code_statistics(latents: np.ndarray, activations: np.ndarray, n_latents: int,
                    chunk_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(df, activation sum, activation max), each (n_latents,), over top-K codes `latents` and `activations` (n, K)
    (an index's doc_codes), read `chunk_rows` rows at a time so that a memory map is never copied whole."""
    from clsr.index.streaming import read_rows

    df = np.zeros(n_latents, np.int64)
    activation_sum = np.zeros(n_latents)
    activation_max = np.zeros(n_latents)
    for start in range(0, len(latents), chunk_rows):
        stop = min(start + chunk_rows, len(latents))
        chunk_latents = read_rows(latents, start, stop, np.int64)  # a memory map's pages handed back after
        chunk_values = read_rows(activations, start, stop)
        fired = chunk_values > 0
        fired_latents, fired_values = chunk_latents[fired], chunk_values[fired]
        df += np.bincount(fired_latents, minlength=n_latents)
        activation_sum += np.bincount(fired_latents, weights=fired_values, minlength=n_latents)
        np.maximum.at(activation_max, fired_latents, fired_values)
    return df, activation_sum, activation_max


LABEL_FIELDS = ("kind", "auc_fires", "auc_strong", "df_share", "simulator", "count_auc_fires", "count_auc_strong",
                "chooser")


def inherited_catalogue(index_dir: str | os.PathLike) -> dict[str, ConceptEntry]:
    """The descriptions an index's SAE inherited through adaptation (``concepts.jsonl`` beside its weights), or {}."""

    from clsr.errors import ClsrError
    from clsr.index.manifest import IndexManifest
    from clsr.search.concept_encoder import recorded_sae_path

    try:
        sae_path = recorded_sae_path(index_dir, IndexManifest.read(index_dir).sae)
    except ClsrError:
        return {}
    path = Path(sae_path) / CATALOGUE_NAME
    return load_catalogue(path) if path.exists() else {}


def merge_inherited(entries: Sequence[ConceptEntry], inherited: dict[str, ConceptEntry]) -> list[ConceptEntry]:
    """`entries` (this corpus's catalogue) with each concept the corpus left undescribed taking its inherited
    description, marked ``inherited`` and naming the SAE that described it; a concept the corpus describes
    keeps its own description (the inherited one is replaced)."""
    merged = []
    for entry in entries:
        base = inherited.get(entry.concept)
        if entry.description or base is None or not base.description:
            merged.append(entry)
        else:
            merged.append(entry._replace(description=base.description, label=base.label, inherited=True,
                                         described_with=base.described_with))
    return merged


def inherit_catalogue(base: dict[str, ConceptEntry], cosines: np.ndarray, base_sae: dict,
                      threshold: float) -> list[ConceptEntry]:
    """The base SAE's descriptions an adapted SAE keeps: those of the concepts whose decoder direction stayed
    above `threshold` (:data:`clsr.sae.adapt.KEPT_COSINE`, 0.9) cosine to the base's (`cosines`, one per
    latent), each marked ``inherited`` and naming the SAE that described it (`base_sae`, ``{"sae", "sha256"}``,
    unless the entry already names one)."""
    kept = []
    for entry in base.values():
        if entry.description and entry.latent < len(cosines) and cosines[entry.latent] > threshold:
            kept.append(entry._replace(inherited=True, described_with=entry.described_with or base_sae))
    return sorted(kept, key=lambda e: e.latent)


def inherit_descriptions(base_path: str | os.PathLike, adapted, output_dir: str | os.PathLike,
                         catalogue: str | os.PathLike | None = None) -> int:
    """After adapting the SAE at `base_path` into `adapted` (saved in `output_dir`): write the base descriptions
    it keeps (:func:`inherit_catalogue`) as ``concepts.jsonl`` beside its weights, where the catalogue of any
    index built with it finds them. The base descriptions come from `catalogue` (e.g. the ``concepts.jsonl`` of
    an index built with the base SAE) or the base SAE folder's own; entries another SAE described are skipped.
    Returns how many concepts inherit a description (0 when there is no base catalogue)."""
    from clsr.sae.adapt import KEPT_COSINE, decoder_cosines
    from clsr.sae.model import TopKSae, sae_checksum

    path = Path(catalogue) if catalogue else Path(base_path) / CATALOGUE_NAME
    if not path.exists():
        return 0
    base_sae = {"sae": Path(base_path).name, "sha256": sae_checksum(base_path)}
    base = {term: entry for term, entry in load_catalogue(path).items()
            if entry.described_with is None or entry.described_with.get("sha256") == base_sae["sha256"]}
    cosines = decoder_cosines(TopKSae.load_from_disk(base_path), adapted)
    kept = inherit_catalogue(base, cosines, base_sae, KEPT_COSINE)
    write_catalogue(kept, Path(output_dir) / CATALOGUE_NAME)
    return len(kept)


def describe_index(index_dir: str | os.PathLike, *, corpus: str | None = None, describer=DEFAULT_DESCRIBER,
                   top_passages: int = 10, progress: bool = True, output: str | os.PathLike | None = None,
                   embeddings: np.ndarray | None = None,
                   max_passages: int | None = DESCRIBE_PASSAGES) -> list[ConceptEntry]:
    """Describe every concept of an index and write the catalogue (default: ``concepts.jsonl`` in the index);
    `embeddings` and `max_passages` as for :func:`build_catalogue`."""
    entries = build_catalogue(index_dir, corpus=corpus, top_passages=top_passages, describer=describer,
                              progress=progress, embeddings=embeddings, max_passages=max_passages)
    write_catalogue(entries, Path(output) if output else Path(index_dir) / CATALOGUE_NAME)
    return entries


def ensure_catalogue(index_dir: str | os.PathLike, *, corpus: str | None = None, progress: bool = True,
                     note=None) -> dict[str, ConceptEntry]:
    """The index's catalogue ({concept term: entry}), described now (once, with the default describer) when the
    index has none: an index built before clsr described every index, or with ``--no-describe``. `note` (e.g.
    ``print``) is told so before the work starts. It is kept where :func:`clsr.index.derived.open_derived` keeps
    what is derived from an index: in its folder, or in the cache where the folder cannot be written; several
    processes starting at once describe it once. Returns {} (after a note) when there is none and the corpus to
    describe it from is not here."""
    from clsr.data import DataError, resolve
    from clsr.index.derived import find_derived, open_derived
    from clsr.index.manifest import IndexManifest

    source = corpus or IndexManifest.read(index_dir).source
    if find_derived(index_dir, CATALOGUE_NAME) is None:
        try:
            found = bool(source) and resolve(source) is not None
        except DataError:  # the corpus the manifest names is not here: search and explain go on without descriptions
            found = False
        if not found:
            if note is not None:
                note(f"{index_dir} has no concept descriptions, and the corpus to describe them from "
                     f"({source or 'none recorded'}) is not here: run `clsr describe --index ... --corpus ...`")
            return {}
        if note is not None:
            note(f"{index_dir} has no concept descriptions (built before clsr described every index, or with "
                 "--no-describe): describing its concepts once; `clsr describe` does the same")

    def build(path: Path) -> None:
        write_catalogue(build_catalogue(index_dir, corpus=corpus, describer=DEFAULT_DESCRIBER, progress=progress),
                        path)

    try:
        return open_derived(index_dir, CATALOGUE_NAME, "the concept catalogue", build, load_catalogue, folder=False)
    except DataError as e:  # a damaged catalogue, and no corpus to describe it again from
        if note is not None:
            note(f"{index_dir}'s concept descriptions cannot be read or made again ({e})")
        return {}


def index_catalogue(index_dir: str | os.PathLike) -> dict[str, ConceptEntry]:
    """The index's catalogue as it is, wherever it is kept (its folder, or the cache where first use described
    it), or {} when there is none or it cannot be read (said in a warning); describes nothing."""
    import logging

    from clsr.errors import ClsrError
    from clsr.index.derived import find_derived

    path = find_derived(index_dir, CATALOGUE_NAME)
    if path is None:
        return {}
    try:
        return load_catalogue(path)
    except (ClsrError, OSError, ValueError, TypeError) as e:
        logging.getLogger(__name__).warning("%s cannot be read (%s): going on without descriptions", path, e)
        return {}


def write_catalogue(entries: Sequence[ConceptEntry], path: str | os.PathLike) -> None:
    """concepts.jsonl, one concept per line, written to a temporary file and renamed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.writing")
    with open(temporary, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry._asdict()) + "\n")
    os.replace(temporary, path)


def load_catalogue(path: str | os.PathLike) -> dict[str, ConceptEntry]:
    """concepts.jsonl (a file, or a folder holding one) as {concept term: entry}."""
    from clsr.data import read_jsonl

    path = Path(path)
    path = path / CATALOGUE_NAME if path.is_dir() else path
    return {row["concept"]: ConceptEntry(**row) for _, row in read_jsonl(path)}


def pick_concepts(catalogue: dict[str, ConceptEntry], text: str, limit: int = 3) -> list[tuple[str, int]]:
    """The concepts whose descriptions best match `text`: (term, number of shared keywords), best first.

    Ties go to the more frequent concept. Matching is on lower-cased words, so "employment, salary"
    picks concepts described with those words.
    """
    from clsr.interpret.describers import description_keywords  # "broad: a, b" -> a, b

    wanted = {w.lower() for w in WORD.findall(text)}
    scored = []
    for term, entry in catalogue.items():
        keywords = {w.lower() for w in description_keywords(entry.description)}
        overlap = len(wanted & keywords)
        if overlap:
            scored.append((-overlap, entry.rank, term))
    return [(term, -negative) for negative, _, term in sorted(scored)[:limit]]
