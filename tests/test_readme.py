"""The README's figures are the benchmark files' own: its results block is what the generator writes from them."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_results_block_is_generated_from_the_benchmark_files():
    generator = _generator()
    readme = (ROOT / "README.md").read_text()
    block = readme.split(generator.START, 1)[1].split(generator.END, 1)[0]
    assert block.strip() == generator.render(*generator.load_results()).strip(), (
        "README.md's results block differs from benchmarks/results/*.json: run python benchmarks/readme_results.py")


def test_the_summary_labels_each_figure_and_counts_the_whole_folder():
    generator = _generator()
    results, transfer = generator.load_results()
    text = generator.summary(results, transfer)
    scifact = results["scifact"]["methods"]
    k128 = scifact["sparse_lucene_k128"]
    ratio = k128["ndcg@10"] / scifact["dense"]["ndcg@10"]
    folder = (k128["index_bytes"] + k128["doc_codes_bytes"]) / 2**20
    assert f"scifact, {results['scifact']['sae']['relation']}: " in text
    assert f"{ratio:.3f}x (K=128, the default doc K)" in text and f"whole folder, with `doc_codes/`, {folder:.1f} MB" in text
    for label in ("zero-shot", "adapted"):
        assert label in text


def test_relative_links_in_the_readme_resolve():
    import re

    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README.md links to {target}, which is not there"
