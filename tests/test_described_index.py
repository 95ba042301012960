"""Every concept index is described when built (issue 24): the catalogue in the index, what the explorer says of
it, first-use describing of an index without one, and descriptions inherited through adaptation."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def described_index(tmp_path_factory, scifact_slice):
    """`clsr index` on the 300-passage SciFact slice, as a new user runs it (describing is the default)."""
    from clsr.cli import main as clsr

    work = tmp_path_factory.mktemp("described")
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n"
                              for d in scifact_slice.documents))
    clsr(["index", "--corpus", str(corpus), "--index", str(work / "index"), "--dtype", "fp32", "--doc-k", "64",
          "--no-tune-alpha"])
    return work / "index"


def test_a_freshly_built_index_has_a_catalogue_and_the_explorer_says_described(described_index):
    from clsr.index.manifest import IndexManifest
    from clsr.interpret.describe import CATALOGUE_NAME, load_catalogue
    from clsr.interpret.explorer import Explorer

    catalogue = load_catalogue(described_index / CATALOGUE_NAME)
    manifest = IndexManifest.read(described_index)
    assert len(catalogue) == manifest.sae.n_latents
    used = [e for e in catalogue.values() if e.df > 0]
    assert len(used) > 1000  # 300 passages x 64 concepts
    # Every concept the corpus uses is described, by the evidence describer, for this index's SAE.
    assert all(e.description and e.label is not None for e in used)
    assert {e.label["chooser"] for e in used} == {"both"} and {e.label["simulator"] for e in used} == {"embedding"}
    assert all(e.described_with == {"sae": manifest.sae.name, "sha256": manifest.sae.sha256} for e in used)
    assert not any(e.inherited for e in catalogue.values())
    assert all(not e.description for e in catalogue.values() if e.df == 0)
    explorer = Explorer(described_index, dtype="fp32")
    assert explorer.info()["described"] is True
    hit = explorer.search("vitamin D and bone density", k=3)["hits"][0]
    # The shared words come first (no description: the word is its own), then the concepts, each described.
    kinds = [c["kind"] for c in hit["concepts"]]
    assert "word" in kinds and kinds == sorted(kinds, key=("word", "specific", "broad").index)
    assert all(c["description"] for c in hit["concepts"] if c["kind"] != "word")
    assert sum(c["contribution"] for c in hit["concepts"]) == hit["score"] == sum(hit["parts"].values())


def test_an_index_without_a_catalogue_is_described_on_first_use(described_index, tmp_path):
    import shutil

    from clsr.interpret.describe import CATALOGUE_NAME, ensure_catalogue, load_catalogue

    index = tmp_path / "index"
    shutil.copytree(described_index, index)
    (index / CATALOGUE_NAME).unlink()  # as an index built before this step, or with --no-describe
    notes = []
    fresh = ensure_catalogue(index, progress=False, note=notes.append)
    assert len(notes) == 1 and "describing its concepts once" in notes[0]
    assert load_catalogue(index / CATALOGUE_NAME) == fresh  # kept in the (writable) index folder
    built = load_catalogue(described_index / CATALOGUE_NAME)
    # The same concepts described (which ones depends only on the integer codes), by the same SAE and describer.
    # The words themselves are not compared: they are chosen by float scores of encoder passes whose summation
    # order follows the thread count, which other tests in the same process change, so a near tie can flip.
    assert {t for t, e in fresh.items() if e.description} == {t for t, e in built.items() if e.description}
    assert {t for t, e in fresh.items() if e.df} == {t for t, e in fresh.items() if e.description}
    assert all(e.described_with == built[t].described_with and (e.label is None) == (built[t].label is None)
               for t, e in fresh.items())
    assert ensure_catalogue(index, note=notes.append) == fresh and len(notes) == 1  # described once


def test_descriptions_survive_adaptation_marked_inherited_until_the_corpus_describes_them(described_index,
                                                                                         tmp_path):
    """An adapted SAE keeps the base description of each concept whose decoder direction stayed above cosine
    0.9, marked inherited and naming the base SAE; a concept the new corpus describes gets its own."""
    import torch

    from clsr.interpret.describe import (
        CATALOGUE_NAME,
        inherit_descriptions,
        load_catalogue,
        merge_inherited,
    )
    from clsr.sae.model import TopKSae, default_sae_path, sae_checksum

    base_path = default_sae_path()
    catalogue = load_catalogue(described_index / CATALOGUE_NAME)
    used = sorted((e for e in catalogue.values() if e.df > 0), key=lambda e: e.rank)
    moved, nudged, kept = used[0].latent, used[1].latent, used[2].latent
    adapted = TopKSae.load_from_disk(base_path)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        adapted.W_dec[moved] = torch.randn(adapted.W_dec.shape[1], generator=generator)  # a new direction
        adapted.W_dec[nudged] += 0.1 * adapted.W_dec[nudged].norm() * torch.randn(adapted.W_dec.shape[1],
                                                                                   generator=generator) / 20
    out = tmp_path / "adapted"
    adapted.save_to_disk(out)
    count = inherit_descriptions(base_path, adapted, out, described_index / CATALOGUE_NAME)
    inherited = load_catalogue(out / CATALOGUE_NAME)
    assert count == len(inherited) == len(used) - 1  # every described concept but the one that moved
    assert f"c{moved}" not in inherited
    for term in (f"c{nudged}", f"c{kept}"):
        assert inherited[term].inherited and inherited[term].description == catalogue[term].description
        assert inherited[term].described_with == {"sae": base_path.name, "sha256": sae_checksum(base_path)}
    # In the adapted index's catalogue: what the corpus describes replaces the inherited description; a concept
    # it leaves undescribed (here: not used) keeps the inherited one, marked.
    entries = [e._replace(description="", label=None, described_with=None) if e.latent == kept else
               e._replace(description="new words", inherited=False) for e in catalogue.values()]
    merged = {e.concept: e for e in merge_inherited(entries, inherited)}
    assert merged[f"c{kept}"].inherited and merged[f"c{kept}"].description == catalogue[f"c{kept}"].description
    assert merged[f"c{nudged}"].description == "new words" and not merged[f"c{nudged}"].inherited
    assert merged[f"c{moved}"].description == "new words" and not merged[f"c{moved}"].inherited
    assert np.isclose(len(merged), len(catalogue))


def test_an_index_catalogue_takes_inherited_descriptions_only_where_its_corpus_describes_nothing(described_index,
                                                                                                tmp_path):
    """The SAE folder's inherited catalogue reaches the index's: a concept the corpus uses is described afresh
    (the inherited description replaced, not marked), an unused one keeps the inherited description, marked."""
    import dataclasses
    import shutil

    from clsr.index.manifest import IndexManifest
    from clsr.interpret.describe import CATALOGUE_NAME, build_catalogue, load_catalogue, write_catalogue
    from clsr.sae.config import CONFIG_NAME
    from clsr.sae.model import WEIGHTS_NAME, default_sae_path

    sae = tmp_path / "adapted-sae"
    sae.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(default_sae_path() / name, sae / name)
    index = tmp_path / "index"
    shutil.copytree(described_index, index)
    manifest = IndexManifest.read(index)
    manifest.replace(sae=dataclasses.replace(manifest.sae, name="adapted-sae", path=str(sae))).write(index)
    catalogue = load_catalogue(index / CATALOGUE_NAME)
    used = next(e for e in catalogue.values() if e.df > 0)
    unused = next(e for e in catalogue.values() if e.df == 0)
    base = {"sae": "base", "sha256": "0" * 64}
    write_catalogue([e._replace(description=f"inherited words {e.concept}", inherited=True, described_with=base)
                     for e in (used, unused)], sae / CATALOGUE_NAME)
    entries = {e.concept: e for e in build_catalogue(index, top_passages=3, describer=None, progress=False)}
    assert entries[unused.concept].inherited and entries[unused.concept].described_with == base
    assert entries[unused.concept].description == f"inherited words {unused.concept}"
    assert not entries[used.concept].inherited and entries[used.concept].description
    assert entries[used.concept].description != f"inherited words {used.concept}"
    assert entries[used.concept].described_with == {"sae": "adapted-sae", "sha256": manifest.sae.sha256}
