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


def test_the_summary_labels_each_figure_and_gives_the_default_rows_own_ratios():
    generator = _generator()
    results, transfer = generator.load_results()
    text = generator.summary(results, transfer)
    for dataset, result in results.items():
        methods = result["methods"]
        if "words_concepts" not in methods:
            continue
        mix = methods["words_concepts"]["ndcg@10"]
        best = max(methods["words_only"]["ndcg@10"], methods["concepts_only"]["ndcg@10"])
        assert f"- {dataset}, {result['sae']['relation']}: words + concepts give {mix:.4f}, {mix / best:.3f}x" in text
        assert f"{methods['rrf_concepts_bm25']['ndcg@10']:.4f} for the two-index RRF" in text
    for label in ("zero-shot", "adapted"):
        assert label in text


def _anchors(markdown):
    """The anchors GitHub gives a file's headings: lower case, punctuation out, spaces to hyphens, repeats numbered."""
    import re

    seen, anchors = {}, set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", _outside_code(markdown), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _outside_code(markdown):
    """The text outside fenced code blocks, where a `](` is code, not a link."""
    import re

    return re.sub(r"^```.*?^```[^\n]*$", "", markdown, flags=re.M | re.S)


def _relative_links(path):
    import re

    for target in re.findall(r"\]\(([^)\s]+)\)", _outside_code(path.read_text())):
        if "://" not in target and not target.startswith("mailto:"):
            yield target


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_docs_folder_has_pages():
    names = {page.name for page in _pages()}
    for name in ("README.md", "command-line.md", "concept-index.md", "hybrid-and-fusion.md", "interpretation.md",
                 "sae.md", "scaling-out.md", "encoding-speed.md", "pyserini.md", "data.md", "python-api.md",
                 "benchmarks.md"):
        assert name in names, f"docs/{name} is missing"


def test_relative_links_in_the_readme_and_docs_resolve():
    """Every relative link in README.md and docs/*.md names a file that is there, and an #anchor into a .md file
    (or into the page itself) names one of its headings."""
    for page in _pages():
        where = page.relative_to(ROOT)
        for target in _relative_links(page):
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            assert linked.exists(), f"{where} links to {target}, and {file_part} is not there"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked.read_text()), (
                    f"{where} links to {target}, and {linked.relative_to(ROOT)} has no heading with that anchor")


def test_the_anchor_rule_is_githubs():
    text = "# The concept explorer: word evidence, descriptions that predict, `clsr serve`\n## Pyserini 1.6 and 2.x\n" \
           "## Tests\n## Tests\n```\n# not a heading\n```\n"
    assert _anchors(text) == {"the-concept-explorer-word-evidence-descriptions-that-predict-clsr-serve",
                              "pyserini-16-and-2x", "tests", "tests-1"}
