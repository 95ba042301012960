"""The explorer's JSON API (clsr serve) on a 300-passage SciFact slice: every endpoint, and bad requests."""

import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clsr.cli import main as clsr  # noqa: E402

QUERY = "vitamin D deficiency and bone fractures"


@pytest.fixture(scope="module")
def compared_indexes(tmp_path_factory, scifact_slice):
    """BM25 and dense indexes of the slice, for the comparison endpoint."""
    from clsr.index import build_bm25_index, build_dense_index

    work = tmp_path_factory.mktemp("compare")
    build_bm25_index(scifact_slice.documents, work / "bm25", source="scifact")
    build_dense_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, work / "dense",
                      encoder=scifact_slice.encoder.config.to_dict(), source="scifact")
    return work / "bm25", work / "dense"


@pytest.fixture(scope="module")
def catalogue(slice_concept_index, tmp_path_factory):
    from clsr.interpret.describe import build_catalogue, write_catalogue

    path = tmp_path_factory.mktemp("catalogue") / "concepts.jsonl"
    write_catalogue(build_catalogue(slice_concept_index, top_passages=5, progress=False), path)
    return path


@pytest.fixture(scope="module")
def explorer(slice_concept_index, compared_indexes, catalogue):
    from clsr.interpret.explorer import Explorer

    bm25, dense = compared_indexes
    return Explorer(slice_concept_index, bm25=bm25, dense=dense, catalogue=catalogue, dtype="fp32")


@pytest.fixture(scope="module")
def client(explorer):
    from clsr.interpret.serve import create_app

    # The Host a browser on this machine sends; TestClient's default, "testserver", is refused (HostCheck).
    with TestClient(create_app(explorer), base_url="http://127.0.0.1:8080") as client:
        yield client


def test_info_names_the_index_and_the_methods_to_compare(client):
    info = client.get("/api/info").json()
    assert info["documents"] == 300 and info["doc_k"] == 64 and info["query_k"] == 128
    assert info["compare"] == ["CL-SR", "hybrid", "BM25", "dense"] and info["described"] is True


def test_info_gives_the_steering_range_the_api_accepts_and_the_sliders_use(client):
    from clsr.interpret.explorer import STEER_RANGE

    assert client.get("/api/info").json()["steer_range"] == list(STEER_RANGE) == [0.0, 3.0]
    edge = client.get("/api/search", params={"q": QUERY, "k": 1, "steer": "c12=3"})
    assert edge.status_code == 200 and edge.json()["steering"] == {"c12": 3.0}
    page = client.get("/static/explorer.js").text
    assert 'min="${low}" max="${high}"' in page and "state.info.steer_range" in page  # no range of its own


def test_search_bars_sum_exactly_to_the_lucene_scores(client, explorer):
    from clsr.interpret.explain import reading_order

    result = client.get("/api/search", params={"q": QUERY, "k": 5}).json()
    expected = explorer.searcher.search(QUERY, 5)
    assert [(h["docid"], h["score"]) for h in result["hits"]] == [(h.docid, h.score) for h in expected]
    for hit, plain in zip(result["hits"], expected):
        assert sum(c["contribution"] for c in hit["concepts"]) == hit["score"]
        # In reading order: specific concepts, then broad ones (a concept-only index has no words), each by size.
        assert [c["concept"] for c in hit["concepts"]] == [c.concept for c in reading_order(plain.concepts,
                                                                                            explorer.kinds)]
        kinds = [c["kind"] for c in hit["concepts"]]
        assert kinds == sorted(kinds, key=["word", "specific", "broad"].index) and "word" not in kinds
        assert sum(hit["parts"].values()) == hit["score"] and hit["parts"]["word"] == 0
        assert all(c["contribution"] == c["query_weight"] * c["doc_weight"] for c in hit["concepts"])
        assert "previous_rank" not in hit and hit["title"] and hit["snippet"]
    assert result["query_concepts"][0]["weight"] == 255 and result["query_concepts"][0]["description"]


def test_steering_matches_the_searcher_and_says_how_far_hits_moved(client, explorer, slice_concept_index):
    from clsr.search import ClsrSearcher

    plain = client.get("/api/search", params={"q": QUERY, "k": 10}).json()
    strongest = plain["query_concepts"][0]["concept"]
    suppressed = client.get("/api/search", params={"q": QUERY, "k": 10, "steer": f"{strongest}=0"}).json()
    assert suppressed["steering"] == {strongest: 0.0}
    assert all(strongest not in {c["concept"] for c in h["concepts"]} for h in suppressed["hits"])
    plain_ranks = {h["docid"]: h["rank"]
                   for h in client.get("/api/search", params={"q": QUERY, "k": 100}).json()["hits"]}
    for hit in suppressed["hits"]:
        assert hit["previous_rank"] == plain_ranks.get(hit["docid"])
        assert sum(c["contribution"] for c in hit["concepts"]) == hit["score"]
    boosted_term = plain["query_concepts"][5]["concept"]
    boosted = client.get("/api/search", params={"q": QUERY, "k": 10, "steer": [f"{boosted_term}=3"]}).json()
    reference = ClsrSearcher(slice_concept_index, steering={int(boosted_term[1:]): 3.0}, dtype="fp32").search(QUERY, 10)
    assert [(h["docid"], h["score"]) for h in boosted["hits"]] == [(h.docid, h.score) for h in reference]
    assert [h["docid"] for h in boosted["hits"]] != [h["docid"] for h in plain["hits"]]


def test_evidence_scores_every_word_of_query_and_passage(client, explorer):
    hit = client.get("/api/search", params={"q": QUERY, "k": 1}).json()["hits"][0]
    concept = hit["concepts"][0]["concept"]
    evidence = client.get("/api/evidence", params={"concept": concept, "q": QUERY, "docid": hit["docid"]}).json()
    assert [w["word"] for w in evidence["query"]["words"]] == QUERY.split()
    document = explorer.texts[hit["docid"]]
    assert evidence["document_text"] == document
    assert all(document[w["start"]:w["end"]] == w["word"] for w in evidence["document"]["words"])
    direct, = explorer.evidence.explain(document, [concept], method="pooling")
    assert [w["score"] for w in evidence["document"]["words"]] == [round(w.score, 6) for w in direct.words]
    assert evidence["query"]["activation"] > 0 and evidence["document"]["activation"] > 0


def test_concept_page_has_the_statistics_of_the_doc_codes(client, explorer):
    hit = client.get("/api/search", params={"q": QUERY, "k": 1}).json()["hits"][0]
    concept = hit["concepts"][0]["concept"]
    page = client.get(f"/api/concepts/{concept}").json()
    doc_codes = explorer.searcher.doc_codes
    latents, activations = np.asarray(doc_codes.latents), np.asarray(doc_codes.activations)
    firing = activations[(latents == int(concept[1:])) & (activations > 0)]
    assert page["df"] == len(firing) and sum(page["histogram"]["counts"]) == len(firing)
    assert page["max_activation"] == pytest.approx(float(firing.max()), abs=1e-5)
    assert page["histogram"]["edges"][-1] == pytest.approx(float(firing.max()), abs=1e-5)
    shown = [p["activation"] for p in page["top_passages"]]
    assert shown == sorted(shown, reverse=True) and len(shown) == min(5, len(firing))
    assert shown[0] == pytest.approx(page["max_activation"], abs=1e-5)
    first = page["top_passages"][0]
    assert all(first["text"][w["start"]:w["end"]] == w["word"] for w in first["words"])
    assert page["region"] in {"head", "torso", "tail"} and page["description"]


def test_concepts_are_found_by_description_words(client, catalogue):
    from clsr.interpret.describe import load_catalogue

    entry = next(e for e in sorted(load_catalogue(catalogue).values(), key=lambda e: e.rank) if e.description)
    words = ", ".join(entry.description.split(", ")[:2])
    found = client.get("/api/concepts", params={"match": words}).json()["concepts"]
    assert entry.concept in [c["concept"] for c in found] and found[0]["matched"] == 2


def test_document_lists_its_strongest_concepts(client, explorer):
    docid = explorer.searcher.doc_codes.ids[0]
    document = client.get(f"/api/documents/{docid}").json()
    activations, latents = explorer.searcher.doc_codes.code(docid)
    assert [c["concept"] for c in document["concepts"]] == [f"c{l}" for l in latents[:20]]
    assert document["text"] == explorer.texts[docid]


def test_compare_puts_every_method_side_by_side(client, explorer, compared_indexes):
    from clsr.search import Bm25Searcher

    result = client.get("/api/compare", params={"q": QUERY, "k": 5}).json()
    assert list(result["methods"]) == ["CL-SR", "hybrid", "BM25", "dense"]
    bm25_hits = Bm25Searcher(compared_indexes[0]).search(QUERY, 5)
    assert [h["docid"] for h in result["methods"]["BM25"]] == [h.docid for h in bm25_hits]
    assert [h["docid"] for h in result["methods"]["CL-SR"]] == [h.docid for h in explorer.searcher.search(QUERY, 5)]
    dense_top = explorer.dense.search(QUERY, 5)
    assert [h["docid"] for h in result["methods"]["dense"]] == [h.docid for h in dense_top]
    assert all(len(hits) == 5 for hits in result["methods"].values())


@pytest.mark.parametrize("path, params, status, message", [
    ("/api/search", {"q": "   "}, 400, "the query is empty"),
    ("/api/search", {"q": QUERY, "k": 100000}, 400, "k=100000: ask for 1 to 100 hits"),
    ("/api/search", {"q": QUERY, "k": 0}, 400, "k=0: ask for 1 to 100 hits"),
    ("/api/search", {"q": QUERY, "k": "ten"}, 422, "k: Input should be a valid integer"),
    ("/api/search", {"q": QUERY, "steer": "c12"}, 400, "expected c<id>=<factor>"),
    ("/api/search", {"q": QUERY, "steer": "c12=lots"}, 400, "'lots' is not a number"),
    ("/api/search", {"q": QUERY, "steer": "c12=99"}, 400, "factors run from 0 (suppress) to 3"),
    ("/api/search", {"q": QUERY, "steer": "c12=3.25"}, 400, "factors run from 0 (suppress) to 3"),
    ("/api/search", {"q": QUERY, "steer": "c99999=2"}, 404, "unknown concept 'c99999'"),
    ("/api/search", {"q": "x" * 3000}, 400, "at most 2000"),
    ("/api/concepts/c99999", {}, 404, "unknown concept 'c99999'"),
    ("/api/concepts/bone", {}, 400, "'bone' is not a concept term"),
    ("/api/concepts", {"match": " "}, 400, "give some description words"),
    ("/api/documents/nope", {}, 404, "unknown document 'nope'"),
    ("/api/evidence", {"concept": "c1"}, 400, "give a query (q), a document (docid) or both"),
    ("/api/evidence", {"concept": "c1", "docid": "nope"}, 404, "unknown document 'nope'"),
    ("/api/evidence", {"concept": "c1", "q": "cells", "method": "magic"}, 400, "method must be pooling or occlusion"),
    ("/api/evidence", {"q": "cells"}, 422, "concept: Field required"),
    ("/api/compare", {"q": ""}, 400, "the query is empty"),
    ("/api/compare", {"q": QUERY, "k": 5000}, 400, "k=5000"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_up(client, path, params, status, message):
    response = client.get(path, params=params)
    assert response.status_code == status
    assert message in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert client.get("/api/info").status_code == 200


def test_the_api_is_documented_and_the_page_calls_only_this_server(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/info", "/api/search", "/api/evidence", "/api/concepts",
                                  "/api/concepts/{concept}", "/api/documents/{docid}", "/api/compare"}
    page = client.get("/")
    assert page.status_code == 200 and "/static/explorer.js" in page.text
    for asset in ("/", "/static/explorer.js", "/static/explorer.css"):
        text = client.get(asset).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), asset  # no outside host
    assert client.get("/docs").status_code == 404  # FastAPI's docs page loads its scripts from a CDN


def test_serve_cli_errors_are_one_line(compared_indexes, slice_concept_index):
    import socket

    with pytest.raises(SystemExit) as exit:
        clsr(["serve", "--index", str(compared_indexes[0])])
    assert str(exit.value.code).startswith("clsr serve: error: ") and "is a bm25 index" in str(exit.value.code)
    with pytest.raises(SystemExit) as exit:
        clsr(["serve", "--index", str(slice_concept_index), "--dense", str(compared_indexes[0])])
    assert "--dense" in str(exit.value.code) and "is not a dense index" in str(exit.value.code)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit:
            clsr(["serve", "--index", str(slice_concept_index), "--port", str(port)])
    assert str(exit.value.code) == f"clsr serve: error: port {port} on 127.0.0.1 is in use; pick another with --port"
