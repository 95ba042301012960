"""Encoding on Ray (local mode) gives the single-process path's embeddings and codes.

Marked ``scale``: it needs the ray extra (``make test-scale``); starting Ray and two actors takes ~30-60 s.
"""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.scale


@pytest.fixture(scope="module")
def hundred_passages(tmp_path_factory, shared_data):
    from clsr.data import load_corpus

    documents = load_corpus("scifact")[:100]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in documents))
    return path, documents


def test_ray_local_mode_gives_the_single_process_codes(hundred_passages, tmp_path):
    pytest.importorskip("ray")
    from clsr.dense import DenseEncoder, encoder_config
    from clsr.ray_encoding import encode_with_ray, read_shards
    from clsr.sae import TopKSae, default_sae_path

    path, documents = hundred_passages
    meta = encode_with_ray(str(path), encoder_config("minilm").to_dict(), tmp_path / "shards", workers=2,
                           sae_path=default_sae_path(), doc_k=64, shard_rows=40, rows_per_batch=16, progress=False)
    assert meta["documents"] == 100 and meta["shards"] == 3 and meta["workers"] == 2
    shards = read_shards(tmp_path / "shards")

    embeddings = DenseEncoder(encoder_config("minilm"), dtype="fp32").encode_documents([d.text for d in documents])
    activations, latents = TopKSae.load_from_disk(default_sae_path()).encode_numpy(embeddings, 64)
    assert shards.ids == [d.id for d in documents]
    # Batches differ (16 rows per actor call, not one length-sorted pass), hence the tolerance.
    np.testing.assert_allclose(shards.embeddings, embeddings, atol=1e-5)
    np.testing.assert_array_equal(shards.latents, latents)
    np.testing.assert_allclose(shards.activations, activations, atol=1e-5)
