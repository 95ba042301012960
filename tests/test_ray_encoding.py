"""Encoding on Ray (local mode) gives the single-process path's embeddings and codes, and the index from them.

Marked ``scale``: it needs the ray extra (``make test-scale``); starting Ray and two actors takes ~30-60 s.
"""

import json

import numpy as np
import pytest

from clsr.cli import main as clsr

pytestmark = pytest.mark.scale


@pytest.fixture(scope="module")
def hundred_passages(tmp_path_factory, shared_data):
    from clsr.data import load_corpus

    documents = load_corpus("scifact")[:100]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in documents))
    return path, documents


def test_clsr_index_on_ray_local_mode_gives_the_single_process_codes(hundred_passages, tmp_path, capsys):
    pytest.importorskip("ray")
    from clsr.encode.dense import DenseEncoder, encoder_config
    from clsr.encode.ray import read_shards
    from clsr.index import DocCodes, read_manifest
    from clsr.sae.model import TopKSae, default_sae_path

    path, documents = hundred_passages
    clsr(["index", "--corpus", str(path), "--index", str(tmp_path / "index"), "--doc-k", "64", "--dtype", "fp32",
          "--ray", "--ray-workers", "2", "--encode-batch-size", "16", "--no-describe"])
    assert "encoded 100 passages on Ray (2 workers, local)" in capsys.readouterr().out
    shards = read_shards(tmp_path / "index.shards")
    codes = DocCodes(tmp_path / "index")

    embeddings = DenseEncoder(encoder_config("minilm"), dtype="fp32").encode_documents([d.text for d in documents])
    activations, latents = TopKSae.load_from_disk(default_sae_path()).encode_numpy(embeddings, 64)
    assert shards.ids == codes.ids == [d.id for d in documents]
    # The actors batch differently (256 rows a call, 16 a pass) from one length-sorted pass: float tolerance.
    np.testing.assert_allclose(shards.embeddings, embeddings, atol=1e-5)
    np.testing.assert_array_equal(codes.latents, latents)
    np.testing.assert_allclose(shards.activations, activations, atol=1e-5)
    # The index stores the actors' activations as float16 (doc_codes/), rounded once.
    np.testing.assert_array_equal(codes.activations, np.asarray(shards.activations).astype(np.float16))
    manifest = read_manifest(tmp_path / "index")
    assert manifest.doc_k == 64
    # The driver resolves auto once for every actor, and the index records what the actors ran.
    assert manifest.encoding == {"backend": "openvino", "dtype": "fp32"} == shards.meta["encoding"]
