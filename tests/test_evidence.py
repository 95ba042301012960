"""Word-level evidence: exact pooling decomposition, occlusion by deletion, and `clsr explain --words`."""

import json

import numpy as np
import pytest

from clsr.cli import main as clsr
from clsr.interpret.evidence import EvidenceExplainer, delete_spans, word_spans

QUERY = "Vitamin D deficiency increases the risk of bone fractures in elderly women."


@pytest.fixture(scope="module")
def explainer(scifact_slice):
    from clsr.sae.model import TopKSae, default_sae_path

    return EvidenceExplainer(scifact_slice.encoder, TopKSae.load_from_disk(default_sae_path()))


def test_words_are_located_by_character_offsets_and_deleted_cleanly():
    text = "IL-10 and the patient's T-cells (n = 12)."
    spans = word_spans(text)
    assert [text[s:e] for s, e in spans] == ["IL-10", "and", "the", "patient's", "T-cells", "n", "12"]
    assert delete_spans(text, [spans[1], spans[2]]) == "IL-10 patient's T-cells (n = 12)."


def test_activation_is_the_relu_of_the_sae_pre_activation(explainer, scifact_slice):
    embedding = scifact_slice.encoder.encode([QUERY])
    values, latents = explainer.sae.encode_numpy(embedding, 8)
    evidence = explainer.explain(QUERY, latents[0].tolist(), method="pooling")
    np.testing.assert_allclose([e.activation for e in evidence], values[0], atol=1e-4)
    assert [e.concept for e in evidence] == [f"c{l}" for l in latents[0]]


def test_pooling_decomposition_sums_exactly_to_the_pre_activation(explainer, scifact_slice):
    text = scifact_slice.documents[0].text
    (offsets, contributions, constant), = explainer.token_contributions([text])
    embedding = scifact_slice.encoder.encode([text])
    pre = (embedding - explainer._b_dec.numpy()) @ explainer._weight.numpy().T + explainer._bias.numpy()
    np.testing.assert_allclose(contributions.sum(0) + constant, pre[0], atol=1e-4)
    assert offsets.shape == (contributions.shape[0], 2) and tuple(offsets[0]) == (0, 0)  # [CLS]


def test_occlusion_scores_are_the_activation_lost_by_deleting_each_word(explainer):
    latent = int(explainer.sae.encode_numpy(explainer.encode([QUERY]), 1)[1][0, 0])
    evidence, = explainer.explain(QUERY, [latent], method="occlusion")
    assert [w.word for w in evidence.words] == QUERY.rstrip(".").split()
    best = evidence.top(1)[0]
    without = explainer.concept_activations([delete_spans(QUERY, [(best.start, best.end)])], [latent])[0, 0]
    assert best.score == pytest.approx(evidence.activation - without, abs=1e-5)
    assert best.score > 0


def test_top_pooling_words_lower_the_activation_more_than_the_bottom_ones(explainer):
    latents = explainer.sae.encode_numpy(explainer.encode([QUERY]), 3)[1][0].tolist()
    for latent, evidence in zip(latents, explainer.explain(QUERY, latents, method="pooling")):
        ranked = sorted(evidence.words, key=lambda w: -w.score)
        top, bottom = [(w.start, w.end) for w in ranked[:2]], [(w.start, w.end) for w in ranked[-2:]]
        after = explainer.concept_activations([delete_spans(QUERY, top), delete_spans(QUERY, bottom)], [latent])[:, 0]
        assert after[0] < evidence.activation and after[0] < after[1]


def test_unknown_method_or_concept_is_refused(explainer):
    with pytest.raises(ValueError, match="method must be one of"):
        explainer.explain(QUERY, [1], method="saliency")
    with pytest.raises(ValueError, match="c0..c8191"):
        explainer.explain(QUERY, [9000])


def test_explain_words_names_the_words_driving_each_shared_concept(slice_concept_index, scifact_slice, capsys):
    from clsr.interpret.explain import TermKinds, reading_order
    from clsr.search import ClsrSearcher

    searcher = ClsrSearcher(slice_concept_index, dtype="fp32")
    hit = searcher.search(QUERY, 1)[0]
    clsr(["explain", "--index", str(slice_concept_index), "--query", QUERY, "--docid", hit.docid, "--words", "--json",
          "--dtype", "fp32", "--top-words", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["score"] == hit.score
    # The shared concepts in reading order (specific ones first, `clsr.interpret.explain`); words need no evidence.
    kinds = TermKinds.for_searcher(searcher)
    expected = [c.concept for c in reading_order(hit.concepts, kinds) if kinds.kind(c.concept) != "word"][:5]
    assert [e["concept"] for e in printed["evidence"]] == expected
    document = next(d.text for d in scifact_slice.documents if d.id == hit.docid)
    for item in printed["evidence"]:
        assert len(item["query"]["words"]) == 3 and len(item["document"]["words"]) == 3
        assert all(QUERY[w["start"]:w["end"]] == w["word"] for w in item["query"]["words"])
        assert all(document[w["start"]:w["end"]] == w["word"] for w in item["document"]["words"])
        scores = [w["score"] for w in item["document"]["words"]]
        assert scores == sorted(scores, reverse=True)
    clsr(["explain", "--index", str(slice_concept_index), "--query", QUERY, "--words", "--concept",
          hit.concepts[0].concept, "--dtype", "fp32"])
    text = capsys.readouterr().out
    assert text.startswith("words that drive each concept (pooling") and hit.concepts[0].concept in text


@pytest.mark.parametrize("argv, message", [
    (["--query", "cells"], "a score needs both --query and --docid"),
    ([], "give --query, --docid or both"),
    (["--query", "cells", "--words", "--concept", "x12"], "'x12' is not a concept term"),
    (["--query", "cells", "--words", "--concept", "c99999"], "concepts must be c0..c8191"),
    (["--docid", "nope", "--words"], "document 'nope' is not in this index"),
])
def test_explain_words_errors_are_one_line(slice_concept_index, argv, message):
    with pytest.raises(SystemExit) as exit:
        clsr(["explain", "--index", str(slice_concept_index), *argv])
    assert message in str(exit.value.code) and "\n" not in str(exit.value.code)


REPEATED = "Courses of treatment: short courses, long courses and no courses at all reduce relapse."


def test_a_repeated_word_is_one_entry_with_its_occurrences_summed(explainer):
    latents = explainer.sae.encode_numpy(explainer.encode([REPEATED]), 3)[1][0].tolist()
    for method in ("pooling", "occlusion"):
        for evidence in explainer.explain(REPEATED, latents, method=method):
            totals = evidence.by_word()
            assert [t.word for t in totals].count("courses") == 1
            assert len(totals) == len({w.word for w in evidence.words})
            courses = next(t for t in totals if t.word == "courses")
            assert courses.spans == ((28, 35), (42, 49), (57, 64))  # "Courses" (capital) is a word of its own
            assert courses.score == pytest.approx(sum(w.score for w in evidence.words if w.word == "courses"))
            assert [t.score for t in totals] == sorted((t.score for t in totals), reverse=True)
            as_json = evidence.to_dict(top=3, by_word=True)["words"]
            assert [w["word"] for w in as_json] == [t.word for t in totals[:3]]
            assert all(REPEATED[w["start"]:w["end"]] == w["word"] for w in as_json)


def test_explain_words_shows_each_word_once(slice_concept_index, scifact_slice, capsys):
    import re

    # A passage within the encoder's 256 tokens (every word scored) with a word of 5+ letters three times or more.
    document = next(d for d in scifact_slice.documents
                    if len(d.text.split()) < 120 and re.search(r"\b(\w{5,})\b.*\b\1\b.*\b\1\b", d.text))
    clsr(["explain", "--index", str(slice_concept_index), "--docid", document.id, "--words", "--json", "--dtype",
          "fp32", "--top-words", "1000"])
    evidence = json.loads(capsys.readouterr().out)["evidence"]
    every_word = [document.text[s:e] for s, e in word_spans(document.text)]
    for item in evidence:
        words = [w["word"] for w in item["document"]["words"]]
        assert len(words) == len(set(words)) and set(words) <= set(every_word)
        assert all(w["count"] == every_word.count(w["word"]) for w in item["document"]["words"])
        assert max(w["count"] for w in item["document"]["words"]) >= 3
    clsr(["explain", "--index", str(slice_concept_index), "--docid", document.id, "--words", "--dtype", "fp32",
          "--top-words", "1000"])
    for line in capsys.readouterr().out.splitlines():
        if line.strip().startswith("document"):
            shown = re.findall(r"([\w'’-]+) [+-]\d\.\d{3}", line)
            assert shown and len(shown) == len(set(shown)), line
