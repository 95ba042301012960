"""Word-level evidence: which words of a text make a concept fire.

A concept's *activation* here is the ReLU of its SAE pre-activation, ``max(0, W_c . (e - b_dec) + b_c)``
for the text's dense embedding ``e``: it equals the value in the top-K code whenever the concept is
among the K strongest, and stays defined (and continuous) when it is not, so that deleting a word
can be measured even when the concept falls out of the code.

Two methods, both giving each word a score in activation units (positive: the word drives the concept):

* ``occlusion`` (the default for single texts): the drop in activation when that one word is deleted
  from the text and the text re-encoded. Causal by construction; costs one encoder pass per word
  (batched), so ~0.1-1 s for a passage on a CPU.
* ``pooling``: an exact decomposition of the pre-activation through mean pooling. With mean pooling
  and L2 normalisation, ``pre_c = sum_t W_c . h_t / (T |p|) + (b_c - W_c . b_dec)``, so each token
  ``t`` contributes ``W_c . h_t / (T |p|)`` and a word the sum over its word pieces. One encoder
  pass gives every concept's evidence at once, which is what the describer needs over a corpus.
  It reads the *contextual* hidden states, so it is not causal; ``benchmarks/evidence.py`` measures
  how faithful each method is (deleting the top words against random ones). Mean-pooled encoders only.

Words are ``\\w+`` runs (with inner hyphens and apostrophes), located by character offsets so a page can
highlight them. Words past the encoder's token limit cannot matter and are left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

WORD_PATTERN = re.compile(r"\w+(?:[-'’]\w+)*")
METHODS = ("occlusion", "pooling")


class WordScore(NamedTuple):
    word: str
    start: int  # character offsets in the text: text[start:end] == word
    end: int
    score: float  # activation units; positive = the word drives the concept


class WordTotal(NamedTuple):
    word: str  # as written; words are compared as written
    score: float  # activation units: the sum of its occurrences' scores
    spans: tuple[tuple[int, int], ...]  # (start, end) of every occurrence, in text order


class ConceptEvidence(NamedTuple):
    concept: str  # the term, e.g. "c1234"
    activation: float  # ReLU of the pre-activation for the whole text
    method: str
    words: tuple[WordScore, ...]  # every scored word occurrence, in text order

    def top(self, n: int = 5, positive: bool = True) -> list[WordScore]:
        """The n highest-scoring word occurrences, strongest first (only those with score > 0 if `positive`)."""
        ranked = sorted(self.words, key=lambda w: (-w.score, w.start))
        return [w for w in ranked if w.score > 0 or not positive][:n]

    def by_word(self) -> list[WordTotal]:
        """Each distinct word once, its score summed over its occurrences, strongest first (ties: first seen first).

        Why the sum: with ``pooling`` each occurrence's tokens are their own terms of the pre-activation, so the
        sum is exactly the share of all of them; with ``occlusion`` each score is one occurrence deleted alone,
        and the sum is the first-order effect of deleting them all. Ranking occurrences instead listed a word
        once per occurrence ("courses +0.010" three times).
        """
        totals: dict[str, list] = {}
        for w in self.words:
            total = totals.setdefault(w.word, [0.0, []])
            total[0] += w.score
            total[1].append((w.start, w.end))
        ranked = sorted(totals.items(), key=lambda item: (-item[1][0], item[1][1][0]))
        return [WordTotal(word, score, tuple(spans)) for word, (score, spans) in ranked]

    def to_dict(self, top: int | None = None, by_word: bool = False) -> dict:
        """As JSON: every occurrence in text order, or the `top` strongest; with `by_word`, the `top` strongest
        distinct words (all when None), each with its summed score, its ``count`` of occurrences and the
        ``start``/``end`` of the first."""
        if by_word:
            words = [{"word": t.word, "start": t.spans[0][0], "end": t.spans[0][1], "score": round(t.score, 6),
                      "count": len(t.spans)} for t in self.by_word()[:top]]
        else:
            words = [{"word": w.word, "start": w.start, "end": w.end, "score": round(w.score, 6)}
                     for w in (self.top(top, positive=False) if top else self.words)]
        return {"concept": self.concept, "activation": round(self.activation, 6), "method": self.method,
                "words": words}


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words of `text`."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


def delete_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with the given character spans removed (whitespace around them collapsed)."""
    pieces, last = [], 0
    for start, end in sorted(spans):
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    return re.sub(r"\s{2,}", " ", "".join(pieces)).strip()


class EvidenceExplainer:
    """Word evidence for SAE concepts of one dense encoder and SAE (e.g. a ClsrSearcher's).

    ``EvidenceExplainer.for_encoder(searcher.concept_encoder)`` reuses an index's encoder and SAE.
    """

    def __init__(self, dense, sae):
        self.dense, self.sae = dense, sae
        weight = sae.encoder.weight.detach().float()  # (L, d)
        self._weight = weight
        self._bias = sae.encoder.bias.detach().float()
        self._b_dec = sae.b_dec.detach().float()

    @classmethod
    def for_encoder(cls, concept_encoder) -> EvidenceExplainer:
        return cls(concept_encoder.dense, concept_encoder.sae)

    def _prefix(self, kind: str) -> str:
        if kind not in ("query", "document"):
            raise ValueError(f"kind must be 'query' or 'document', not {kind!r}")
        return self.dense.config.query_prefix if kind == "query" else ""

    def activations(self, embeddings: np.ndarray, latents: Sequence[int]) -> np.ndarray:
        """(n, len(latents)) ReLU'd pre-activations of the given latents for (n, d) embeddings."""
        latents = torch.as_tensor(np.asarray(latents, np.int64))
        x = torch.as_tensor(np.asarray(embeddings, np.float32)) - self._b_dec
        return (x @ self._weight[latents].T + self._bias[latents]).relu().numpy()

    def encode(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        prefix = self._prefix(kind)
        return self.dense.encode([prefix + t for t in texts])

    def concept_activations(self, texts: Sequence[str], latents: Sequence[int], kind: str = "document") -> np.ndarray:
        """(len(texts), len(latents)) activations of the given concepts for each text."""
        return self.activations(self.encode(texts, kind), latents)

    def visible_spans(self, text: str, kind: str = "document") -> list[tuple[int, int]]:
        """The word spans of `text` that fall within the encoder's token limit (the others cannot matter)."""
        spans = word_spans(text)
        prefix = self._prefix(kind)
        encoded = self.dense.tokenizer(prefix + text, truncation=True, max_length=self.dense.config.max_length,
                                       return_offsets_mapping=True)
        last = max((end for start, end in encoded["offset_mapping"] if end > start), default=0) - len(prefix)
        return [(s, e) for s, e in spans if s < last]

    def explain(self, text: str, concepts: Sequence[int | str], method: str = "occlusion",
                kind: str = "document") -> list[ConceptEvidence]:
        """Evidence for each of `concepts` (latent ids or terms like "c12") in `text`, in the given order.

        Raises ValueError for an unknown method, a latent outside the SAE, or ``pooling`` with an
        encoder that does not mean-pool.
        """
        from clsr.index.concepts import concept_latent, concept_term

        latents = [concept_latent(c) if isinstance(c, str) else int(c) for c in concepts]
        n_latents = self.sae.config.n_latents
        if any(not 0 <= l < n_latents for l in latents):
            raise ValueError(f"concepts must be c0..c{n_latents - 1} for this SAE")
        if method == "occlusion":
            base, spans, scores = self._occlusion(text, latents, kind)
        elif method == "pooling":
            base, spans, scores = self._pooling(text, latents, kind)
        else:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        return [ConceptEvidence(concept_term(latent), float(base[j]), method,
                                tuple(WordScore(text[s:e], s, e, float(scores[i, j]))
                                      for i, (s, e) in enumerate(spans)))
                for j, latent in enumerate(latents)]

    def _occlusion(self, text: str, latents: list[int], kind: str):
        spans = self.visible_spans(text, kind)
        variants = [text] + [delete_spans(text, [span]) for span in spans]
        values = self.concept_activations(variants, latents, kind)
        return values[0], spans, values[0][None, :] - values[1:]

    def token_contributions(self, texts: Sequence[str], kind: str = "document"):
        """Per text: (offsets (T, 2), contributions (T, L) of every token to every latent's pre-activation,
        constant (L,)), with sum(contributions) + constant = the pre-activations; offsets are in the text
        without the prefix. Needs a mean-pooling encoder."""
        config = self.dense.config
        if config.pooling != "mean":
            raise ValueError(f"the pooling method needs a mean-pooling encoder; {config.model} uses "
                             f"{config.pooling} pooling (use occlusion)")
        prefix = self._prefix(kind)
        constant = (self._bias - self._weight @ self._b_dec).numpy()
        out = []
        with torch.inference_mode():
            for text in texts:
                tokens = self.dense.tokenizer(prefix + text, truncation=True, max_length=config.max_length,
                                              return_offsets_mapping=True, return_tensors="pt")
                offsets = tokens.pop("offset_mapping")[0].numpy() - len(prefix)
                hidden = self.dense.last_hidden_state(tokens)[0]
                pooled = hidden.mean(0)
                scale = hidden.shape[0] * (pooled.norm().clamp(min=1e-12) if config.normalize else 1.0)
                out.append((offsets, (hidden @ self._weight.T / scale).numpy(), constant))
        return out

    def batched_contributions(self, texts: Sequence[str], latent_lists: Sequence[Sequence[int]],
                              consume, batch_size: int = 16) -> None:
        """Token contributions of many documents, batched: for each text ``i``, ``consume(i, offsets (T, 2),
        contributions (T, len(latent_lists[i])))``, the columns of :meth:`token_contributions` for those
        latents only (what the describer needs: a few dozen of the SAE's thousands). Texts go through the
        encoder longest first, in batches, so padding stays small; with OpenVINO batches run concurrently and
        ``consume`` is called in completion order, one call at a time. Needs a mean-pooling encoder."""
        config = self.dense.config
        if config.pooling != "mean":
            raise ValueError(f"the pooling method needs a mean-pooling encoder; {config.model} uses "
                             f"{config.pooling} pooling (use occlusion)")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        weight = self._weight.numpy()

        def forward(number: int, hidden: np.ndarray, offsets: np.ndarray, mask: np.ndarray) -> None:
            for row, i in enumerate(batches[number]):
                length = int(mask[row].sum())
                states = np.asarray(hidden[row, :length], np.float32)
                pooled = states.mean(0)
                scale = length * (max(float(np.linalg.norm(pooled)), 1e-12) if config.normalize else 1.0)
                columns = np.asarray(latent_lists[i], np.int64)
                consume(i, np.asarray(offsets[row, :length]), states @ weight[columns].T / scale)

        self.dense.hidden_batches([[texts[i] for i in batch] for batch in batches], forward)

    def _pooling(self, text: str, latents: list[int], kind: str):
        (offsets, contributions, constant), = self.token_contributions([text], kind)
        spans = self.visible_spans(text, kind)
        chosen = contributions[:, latents]
        # Centred: a token counts by how far it lifts the concept above the average token, which is what
        # removing it from the mean changes (to first order); raw shares would favour long, many-piece words.
        scores = word_scores(spans, offsets, chosen - chosen.mean(0, keepdims=True))
        base = np.maximum(chosen.sum(0) + constant[latents], 0)
        return base, spans, scores


def word_scores(spans: Sequence[tuple[int, int]], offsets: np.ndarray, contributions: np.ndarray) -> np.ndarray:
    """(len(spans), C) sums of the token rows whose character offsets fall inside each word span.

    Special tokens ([CLS], [SEP], offsets (0, 0)) and prefix tokens (negative offsets) belong to no word.
    """
    scores = np.zeros((len(spans), contributions.shape[1]), np.float64)
    starts = np.array([s for s, _ in spans])
    for row, (start, end) in enumerate(offsets.tolist()):
        if end <= start or start < 0:
            continue
        word = int(np.searchsorted(starts, start, side="right")) - 1
        if word >= 0 and start < spans[word][1]:
            scores[word] += contributions[row]
    return scores


def passage_texts(index_dir, corpus: str | None = None) -> dict[str, str]:
    """{docid: text} of the passages an index was built from (`corpus`, else the manifest's source), each cut
    where the index's encoder cuts it (:func:`clsr.encode.dense.cut_texts`).

    Raises clsr.index.InvalidIndexError when neither names a corpus.
    """
    from clsr.data import iter_corpus
    from clsr.encode.dense import CHARS_PER_TOKEN_BOUND, EncoderConfig
    from clsr.index import InvalidIndexError, read_manifest

    manifest = read_manifest(index_dir)
    corpus = corpus or manifest.source
    if not corpus:
        raise InvalidIndexError(f"{index_dir}'s manifest names no corpus; give the passages with --corpus")
    limit = EncoderConfig.from_dict(manifest.encoder).max_length * CHARS_PER_TOKEN_BOUND  # as the encoder cuts
    return {d.id: d.text[:limit] for d in iter_corpus(corpus)}


def match_evidence(explainer: EvidenceExplainer, concepts: Sequence[str], query: str | None = None,
                   document: str | None = None, method: str = "pooling", top: int | None = 5,
                   by_word: bool = False) -> list[dict]:
    """Per concept: its evidence in the query and in the document (either may be None), as dicts.

    ``{"concept", "query": {"activation", "method", "words": [...]}, "document": {...}}``; words are the
    `top` strongest occurrences (all, in text order, when top is None), or with `by_word` the `top` strongest
    distinct words, each with its occurrences' summed score (`ConceptEvidence.by_word`).
    """
    sides = {"query": query, "document": document}
    found = {side: explainer.explain(text, concepts, method=method, kind=side) if text is not None else None
             for side, text in sides.items()}
    return [{"concept": term, **{side: (found[side][n].to_dict(top, by_word) if found[side] else None)
                                 for side in sides}}
            for n, term in enumerate(concepts)]


def format_word_evidence(evidence: Sequence[dict], method: str = "pooling") -> str:
    """`clsr explain --words` as text: per concept, its top words in the query and in the document; a word found
    more than once (``count``, from ``by_word`` evidence) shows how often: ``courses +0.030 (x3)``."""
    lines = [f"words that drive each concept ({method}; score in activation units):"]
    for item in evidence:
        lines.append(f"  {item['concept']}" + (f"  {item['description']}" if item.get("description") else ""))
        for side in ("query", "document"):
            found = item.get(side)
            if found is None:
                continue
            words = ", ".join(f"{w['word']} {w['score']:+.3f}" + (f" (x{w['count']})" if w.get("count", 1) > 1 else "")
                              for w in found["words"] if w["score"] > 0)
            lines.append(f"    {side:<8} act {found['activation']:.3f}: {words or '(no word raises it)'}")
    return "\n".join(lines)
