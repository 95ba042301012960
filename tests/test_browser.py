"""The explorer end to end in real headless Chromium: search, exact bars, evidence, concept page, steering.

Run with ``make test-browser`` (installs Debian's chromium and Playwright for Python; left out of
``make test``). Screenshots go to $CLSR_SCREENSHOT_DIR when set.
"""

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
QUERY = "vitamin D deficiency and bone fractures"


@contextlib.contextmanager
def serving(index: Path, catalogue: Path, bm25: Path):
    """`clsr serve` on ``index``, as a user would start it; yields its URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "clsr.interpret", "serve", "--index", str(index), "--port",
                                str(port), "--catalogue", str(catalogue), "--bm25", str(bm25), "--dtype", "fp32"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/api/info", timeout=1)
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"clsr serve exited: {process.stdout.read()}") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("clsr serve did not answer within 2 minutes")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory, scifact_slice) -> Path:
    from clsr.index import build_bm25_index

    folder = tmp_path_factory.mktemp("browser-bm25") / "bm25"
    build_bm25_index(scifact_slice.documents, folder, source="scifact")
    return folder


@pytest.fixture(scope="module")
def server(slice_concept_index, tmp_path_factory, bm25_index):
    """`clsr serve` on the 300-passage concept-only slice (with a catalogue and a BM25 index)."""
    from clsr.interpret.describe import build_catalogue, write_catalogue

    work = tmp_path_factory.mktemp("browser")
    write_catalogue(build_catalogue(slice_concept_index, top_passages=5, progress=False), work / "concepts.jsonl")
    with serving(slice_concept_index, work / "concepts.jsonl", bm25_index) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: run scripts/install_chromium.sh (make test-browser does)")
    with playwright_api.sync_playwright() as playwright:
        # attacker.example resolves to this machine, as a DNS-rebinding site's name would (see the last test).
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-background-networking",
                                                   "--host-resolver-rules=MAP attacker.example 127.0.0.1"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        yield page
        browser.close()


def screenshot(page, name: str) -> None:
    directory = os.environ.get("CLSR_SCREENSHOT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / name), full_page=True)


def ranking(page) -> list[str]:
    return page.locator("#hits .hit").evaluate_all("hits => hits.map(h => h.dataset.docid)")


def test_search_evidence_concept_page_and_steering(page, server):
    page.goto(server + "/")
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    page.wait_for_selector("#hits .hit")
    hits = page.locator("#hits .hit")
    assert hits.count() == 10

    # Every bar's segments sum exactly to the score printed beside it.
    for n in range(hits.count()):
        hit = hits.nth(n)
        score = float(hit.locator(".score").inner_text())
        parts = hit.locator(".seg").evaluate_all("segs => segs.map(s => Number(s.dataset.contribution))")
        assert sum(parts) == score and len(parts) >= 2
    before = ranking(page)

    # A chip shows the words behind its concept in the query and in the passage.
    hits.first.locator(".chip").first.click()
    page.wait_for_selector("#query-text mark")
    assert page.locator("#hits .hit").first.locator(".snippet mark").count() > 0
    screenshot(page, "explorer-search-test.png")

    # The concept page: description, histogram and top passages with their evidence.
    concept = hits.first.locator(".chip").first.get_attribute("data-concept")
    hits.first.locator(".chip .concept-link").first.click()
    page.wait_for_selector("#concept-title")
    assert concept in page.inner_text("#concept-title")
    assert page.locator("svg.histogram rect").count() == 20
    assert page.locator(".passage").count() >= 1 and page.locator(".passage mark").count() > 0
    screenshot(page, "explorer-concept-test.png")

    # Back to the results; suppress the strongest query concept: the ranking changes and hits say how they moved.
    page.click("text=back to the results")
    page.wait_for_selector("#search-view:not([hidden])")
    slider = page.locator("#sliders input[type=range]").first
    steered = page.locator("#sliders .slider").first.get_attribute("data-concept")
    slider.fill("0")
    page.wait_for_function("document.querySelector('#status').textContent.includes('steered')")
    after = ranking(page)
    assert after != before
    assert page.locator("#hits .moved.up, #hits .moved.down, #hits .moved.new").count() > 0
    for n in range(page.locator("#hits .hit").count()):
        hit = page.locator("#hits .hit").nth(n)
        assert steered not in hit.locator(".seg").evaluate_all("segs => segs.map(s => s.dataset.concept)")
        parts = hit.locator(".seg").evaluate_all("segs => segs.map(s => Number(s.dataset.contribution))")
        assert sum(parts) == float(hit.locator(".score").inner_text())

    # Bad input is shown, not fatal; and the page never called outside this server.
    page.fill("#query", "   ")
    page.press("#query", "Enter")
    assert page.inner_text("#error") == "the query is empty"
    assert page.requests and all(url.startswith(server) for url in page.requests)


def test_a_view_is_a_link_the_query_steering_and_concept_page_survive_a_reload(page, server):
    """The explorer keeps its state in the URL: opening /?q=... shows what typing the query shows, a slider's
    steering survives a reload, the concept page is a link of its own, and a hand-written /#q=... works."""
    from urllib.parse import parse_qs, quote, urlsplit

    page.goto(server + "/")
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    page.wait_for_selector("#hits .hit")
    typed = ranking(page)
    assert parse_qs(urlsplit(page.url).query) == {"q": [QUERY]}

    page.goto(f"{server}/?q={quote(QUERY)}")
    page.wait_for_selector("#hits .hit")
    assert ranking(page) == typed and page.input_value("#query") == QUERY

    steered = page.locator("#sliders .slider").first.get_attribute("data-concept")
    page.locator("#sliders input[type=range]").first.fill("0")
    page.wait_for_function("document.querySelector('#status').textContent.includes('steered')")
    steered_ranking = ranking(page)
    assert parse_qs(urlsplit(page.url).query)["steer"] == [f"{steered}=0"]
    page.reload()
    page.wait_for_function("document.querySelector('#status').textContent.includes('steered')")
    assert ranking(page) == steered_ranking and steered_ranking != typed
    assert page.locator(f"#sliders .slider[data-concept='{steered}'] input").input_value() == "0"
    screenshot(page, "explorer-reloaded-steered-test.png")

    concept = page.locator("#hits .hit .chip").first.get_attribute("data-concept")
    page.goto(f"{server}/?q={quote(QUERY)}#concept/{concept}")
    page.wait_for_selector("#concept-title")
    assert concept in page.inner_text("#concept-title")
    page.click("text=back to the results")
    page.wait_for_selector("#hits .hit")
    assert ranking(page) == typed

    page.goto(f"{server}/#q={quote(QUERY)}&k=20")
    page.wait_for_selector("#hits .hit")
    assert page.locator("#hits .hit").count() == 20 and ranking(page)[:10] == typed
    assert parse_qs(urlsplit(page.url).query) == {"q": [QUERY], "k": ["20"]}


def test_a_site_whose_name_is_rebound_to_this_machine_gets_no_passages(page, server):
    """DNS rebinding as a browser meets it: a page of attacker.example, whose name now resolves to 127.0.0.1,
    reaches clsr serve with that Host and gets 421; the same server still answers its own names."""
    port = server.rsplit(":", 1)[1]
    other = page.context.browser.new_page()  # its own requests: the search test checks the first page's
    try:
        response = other.goto(f"http://attacker.example:{port}/api/search?q=vitamin&k=1")
        assert response.status == 421 and "not served here" in other.content() and "hits" not in other.content()
        assert other.goto(f"http://localhost:{port}/api/info").status == 200
    finally:
        other.close()


def test_a_words_and_concepts_index_shows_word_chips_first_and_still_steers(page, tmp_path_factory, scifact_slice,
                                                                            bm25_index):
    """The default index (words beside concepts, issue 31): each hit's chips read words first, then concepts; its
    bar still sums exactly to its score; steering a concept still moves the ranking."""
    from clsr.index import build_concept_index
    from clsr.index.lucene import BM25_B, BM25_K1
    from clsr.index.mix import DEFAULT_NORMALIZATION, DEFAULT_WORDS_WEIGHT
    from clsr.index.words import corpus_words
    from clsr.interpret.describe import build_catalogue, write_catalogue
    from clsr.sae.model import TopKSae, default_sae_path

    work = tmp_path_factory.mktemp("browser-words")
    words = corpus_words([d.text for d in scifact_slice.documents], BM25_K1, BM25_B,
                         scifact_slice.encoder.config.max_length, progress=False)
    build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, work / "index",
                        sae=TopKSae.load_from_disk(default_sae_path()), sae_path=default_sae_path(),
                        encoder=scifact_slice.encoder.config.to_dict(), encoding=scifact_slice.encoder.encoding,
                        doc_k=64, source="scifact", progress=False, words=words, words_weight=DEFAULT_WORDS_WEIGHT,
                        normalization=DEFAULT_NORMALIZATION)
    write_catalogue(build_catalogue(work / "index", top_passages=5, progress=False), work / "concepts.jsonl")
    with serving(work / "index", work / "concepts.jsonl", bm25_index) as url:
        page.goto(url + "/")
        page.fill("#query", QUERY)
        page.press("#query", "Enter")
        page.wait_for_selector("#hits .hit")
        hits = page.locator("#hits .hit")
        first = hits.first
        # "vitamin" is in the query and in the top passages: a word chip, before every concept chip.
        kinds = first.locator(".chip").evaluate_all("chips => chips.map(c => c.classList.contains('word'))")
        assert kinds[0] and False in kinds and kinds == sorted(kinds, reverse=True)
        assert any("vitamin" in text for text in first.locator(".chip.word").all_inner_texts())
        for n in range(hits.count()):
            hit = hits.nth(n)
            parts = hit.locator(".seg").evaluate_all("segs => segs.map(s => Number(s.dataset.contribution))")
            assert sum(parts) == float(hit.locator(".score").inner_text())
        screenshot(page, "explorer-words-test.png")
        before = ranking(page)
        page.locator("#sliders input[type=range]").first.fill("0")
        page.wait_for_function("document.querySelector('#status').textContent.includes('steered')")
        assert ranking(page) != before
        for n in range(page.locator("#hits .hit").count()):
            hit = page.locator("#hits .hit").nth(n)
            parts = hit.locator(".seg").evaluate_all("segs => segs.map(s => Number(s.dataset.contribution))")
            assert sum(parts) == float(hit.locator(".score").inner_text())
