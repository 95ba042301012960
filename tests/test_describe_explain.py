"""The concept catalogue on a planted SAE, and exact explanations on a real concept index."""

import json

import numpy as np
import pytest
import torch

from clsr.index import build_concept_index
from clsr.interpret.describe import build_catalogue, load_catalogue, regions, write_catalogue
from clsr.sae.config import SaeConfig
from clsr.sae.model import TopKSae

# Results that depend on encoder numerics: run again under CLSR_DTYPE=bf16 by `make test-bf16`.
pytestmark = pytest.mark.numerics

# Planted: latent j fires (alone) on the documents of topic j, with activation = the embedding's scale.
TOPICS = {0: ["apple orchard harvest", "apple cider orchard", "orchard apple trees", "apple harvest season",
              "cider from orchard apple", "apple orchard pests"],
          1: ["turbine engine thrust", "jet engine turbine blades", "turbine engine maintenance"],
          2: ["volcano eruption lava"]}


@pytest.fixture(scope="module")
def planted_index(tmp_path_factory):
    work = tmp_path_factory.mktemp("planted")
    sae = TopKSae(SaeConfig(d_in=8, n_latents=16, k=2))
    with torch.no_grad():
        sae.encoder.weight.zero_()
        sae.encoder.weight[:8] = torch.eye(8)
        sae.encoder.bias.zero_()
        sae.b_dec.zero_()
    sae.save_to_disk(work / "sae")
    ids, embeddings, corpus = [], [], []
    for latent, texts in TOPICS.items():
        for n, text in enumerate(texts):
            docid = f"t{latent}-{n}"
            ids.append(docid)
            embeddings.append(np.eye(8, dtype=np.float32)[latent] * (1.0 + n))  # activations 1, 2, 3, ...
            corpus.append({"_id": docid, "title": "", "text": text})
    (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    build_concept_index(ids, np.stack(embeddings), work / "index", sae=sae, sae_path=work / "sae",
                        encoder={"model": "planted"}, doc_k=2, source=str(work / "corpus.jsonl"), progress=False)
    return work / "index"


def test_regions_split_postings_by_cumulative_share():
    rank, region = regions(np.array([3, 0, 6, 1]))
    assert rank.tolist() == [2, 4, 1, 3]
    assert region.tolist() == ["torso", "unused", "head", "tail"]


def test_catalogue_statistics_match_the_plant(planted_index):
    entries = {e.latent: e for e in build_catalogue(planted_index, top_passages=3, progress=False)}
    assert [(entries[j].df, entries[j].rank, entries[j].region) for j in range(3)] == [
        (6, 1, "head"), (3, 2, "torso"), (1, 3, "tail")]
    assert all(entries[j].df == 0 and entries[j].region == "unused" for j in range(3, 16))
    assert entries[0].mean_activation == pytest.approx(3.5) and entries[0].max_activation == pytest.approx(6.0)
    assert [p["docid"] for p in entries[0].top_passages] == ["t0-5", "t0-4", "t0-3"]  # strongest first
    assert entries[1].top_passages[0]["snippet"] == "turbine engine maintenance"


def test_descriptions_come_from_the_passages_that_activate_the_concept(planted_index, tmp_path):
    entries = build_catalogue(planted_index, top_passages=6, progress=False)
    write_catalogue(entries, tmp_path / "concepts.jsonl")
    catalogue = load_catalogue(tmp_path / "concepts.jsonl")
    assert set(catalogue["c0"].description.split(", ")[:2]) == {"apple", "orchard"}
    assert set(catalogue["c1"].description.split(", ")[:2]) == {"turbine", "engine"}
    assert catalogue["c2"].description.split(", ")[0] in {"volcano", "eruption", "lava"}
    assert catalogue["c5"].description == ""


def test_no_network_call_without_an_llm(planted_index, monkeypatch):
    import socket
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("a network call was made")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    entries = build_catalogue(planted_index, top_passages=3, progress=False)
    assert entries[0].description


def test_llm_describer_asks_an_openai_compatible_endpoint(planted_index):
    import http.server
    import threading

    from clsr.interpret.describe import LlmDescriber

    asked = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            answer = json.dumps({"choices": [{"message": {"content": '"Apple orchards and harvests"'}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        describer = LlmDescriber(f"http://127.0.0.1:{server.server_port}/v1", "test-model")
        assert describer.describe(["apple orchard harvest", "apple cider orchard"]) == "Apple orchards and harvests"
    finally:
        server.shutdown()
    path, body = asked[0]
    assert path == "/v1/chat/completions" and body["model"] == "test-model"
    assert "apple cider orchard" in body["messages"][-1]["content"]
