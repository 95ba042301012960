"""What clsr writes into an index folder after its build (issue 30, field cases 23-27 and 31): engines and the
concept catalogue work on a read-only or another user's index, get the umask's modes, survive several processes
starting at once and damaged files, and leave nothing behind from a killed build; BMP finds every passage a small
index has (case 25).

"A user who cannot write there" is, as root, ``setpriv`` without the capabilities that let root ignore modes.
Every test writes its own inputs: 40 SciFact passages and 8 of its claims.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from clsr.cli import main as clsr
from clsr.data import load_corpus, load_topics

pytestmark = pytest.mark.slow
ROOT = os.geteuid() == 0
DROP_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if ROOT else []
OTHER_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("index-folder-inputs")
    corpus, topics = folder / "corpus.jsonl", folder / "queries.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in load_corpus("scifact")[:40]))
    claims = list(load_topics("scifact", "test").items())[:8]
    topics.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in claims))
    folder.chmod(0o755)  # another user reads the inputs
    return corpus, topics


def _build(corpus: Path, index: Path, *extra: str) -> Path:
    clsr(["index", "--corpus", str(corpus), "--index", str(index), "--no-tune-alpha", "--no-describe",
          "--encoder-backend", "torch", "--dtype", "fp32", *extra])
    return index


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, inputs) -> Path:
    """The index of the 40 passages, built once: tests search copies of it (a copy is what a rebuild makes)."""
    return _build(inputs[0], tmp_path_factory.mktemp("index-folder-built") / "index")


def _copy(built_index: Path, index: Path) -> Path:
    shutil.copytree(built_index, index)
    return index


def _search_here(index: Path, topics: Path, output: Path, *extra: str) -> None:
    """`clsr search` in this process: for a search that only has to build an engine (a subprocess costs seconds
    of start-up). Runs that are compared with others' come from their own processes, as a user's would."""
    clsr(["search", "--index", str(index), "--topics", str(topics), "--output", str(output), "--hits", "40", *extra])


def _search(index: Path, topics: Path, output: Path, *extra: str, prefix=(), env=None, check=True):
    """`clsr search` in its own process (as another user with ``prefix``); returns the finished process."""
    command = [*prefix, sys.executable, "-m", "clsr.search", "--index", str(index), "--topics", str(topics),
               "--output", str(output), "--hits", "40", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env or os.environ.copy())
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _lines(run: Path) -> list[str]:
    return run.read_text().splitlines()


@pytest.fixture(scope="module")
def lucene_run(tmp_path_factory, inputs, built_index) -> Path:
    """The exact run every engine must equal on 40 passages."""
    corpus, topics = inputs
    folder = tmp_path_factory.mktemp("lucene-run")
    index = _copy(built_index, folder / "index")
    _search(index, topics, folder / "run.trec", "--engine", "lucene")
    return folder / "run.trec"


def _fresh_cache(tmp_path: Path) -> dict:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777, exist_ok=True)
    cache.chmod(0o777)
    return {**os.environ, "CLSR_CACHE": str(cache), "RUST_BACKTRACE": "1"}


@pytest.mark.skipif(not ROOT and os.name != "posix", reason="needs POSIX modes")
@pytest.mark.parametrize("engine", ["seismic", "bmp"])
def test_a_read_only_index_is_searched_with_the_engine_kept_in_the_cache(tmp_path, inputs, built_index, lucene_run,
                                                                         engine):
    """Case 23: the engine goes to $CLSR_CACHE/derived/<identity>/, said in one line; the run is Lucene's."""
    pytest.importorskip({"seismic": "seismic", "bmp": "bmp"}[engine])
    corpus, topics = inputs
    index = _copy(built_index, tmp_path / "index")
    before = sorted(p.name for p in index.rglob("*"))
    subprocess.run(["chmod", "-R", "a-w", str(index)], check=True)
    env = _fresh_cache(tmp_path)
    try:
        result = _search(index, topics, tmp_path / "run.trec", "--engine", engine, prefix=DROP_OVERRIDE, env=env)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(index)], check=True)
    assert _lines(tmp_path / "run.trec") == _lines(lucene_run)
    assert sorted(p.name for p in index.rglob("*")) == before  # nothing written into the index
    derived = list((tmp_path / "cache" / "derived").glob(f"*/engines/{engine}-*"))
    assert len(derived) == 1 and (derived[0] / "clsr-derived.json").exists()
    assert f"{index} cannot be written here: the {'Seismic' if engine == 'seismic' else 'BMP'} engine goes to " \
           f"{derived[0]}" in result.stderr
    assert "Traceback" not in result.stderr and "Saving" not in result.stdout + result.stderr
    # A second search reads the cached engine and builds nothing.
    again = _search(index, topics, tmp_path / "again.trec", "--engine", engine, prefix=DROP_OVERRIDE, env=env)
    assert "built the" not in again.stderr and _lines(tmp_path / "again.trec") == _lines(lucene_run)


def _other_user_can_run_clsr() -> bool:
    """Whether user 65534 can run this Python and read the data (not where the checkout sits in a private folder,
    as a fresh clone under mktemp does)."""
    if not ROOT:
        return False
    probe = subprocess.run([*OTHER_USER, sys.executable, "-c", "import clsr.search"], capture_output=True,
                           timeout=120)
    return probe.returncode == 0


@pytest.mark.parametrize("engine", ["seismic", "bmp"])
def test_what_a_search_writes_gets_the_umask_modes(tmp_path, inputs, built_index, engine):
    """Case 24: under umask 022 the engine folder is 755 and its files 644, as the index's own are; under 077,
    private. (Before, mkdtemp's 0700 made the engine private to whoever searched first.)"""
    pytest.importorskip(engine)
    corpus, topics = inputs
    for umask, folder_mode, file_mode in ((0o022, 0o755, 0o644), (0o077, 0o700, 0o600)):
        index = _copy(built_index, tmp_path / f"index-{umask:o}")
        old = os.umask(umask)
        try:
            _search_here(index, topics, tmp_path / "run.trec", "--engine", engine)
        finally:
            os.umask(old)
        (built,) = (index / "engines").glob(f"{engine}-*")
        assert stat.S_IMODE(built.stat().st_mode) == folder_mode
        assert {stat.S_IMODE(p.stat().st_mode) for p in built.iterdir()} == {file_mode}


def test_another_user_searches_with_the_engine_the_first_one_built(inputs, lucene_run):
    """Case 24: a second user (65534) reads the engine the first one built, writes nothing and builds nothing."""
    pytest.importorskip("seismic")
    if not _other_user_can_run_clsr():
        pytest.skip("user 65534 cannot run this checkout's Python here (not root, or a private folder above it)")
    import tempfile

    corpus, topics = inputs
    shared = Path(tempfile.mkdtemp(prefix="clsr-shared-index-"))  # pytest's own tmp is private to root
    try:
        shared.chmod(0o755)
        topics = Path(shutil.copy(topics, shared / topics.name))
        (shared / topics.name).chmod(0o644)
        old = os.umask(0o022)
        try:
            index = _build(corpus, shared / "index")
            _search_here(index, topics, shared / "first.trec", "--engine", "seismic")
        finally:
            os.umask(old)
        output = shared / "out"
        output.mkdir()
        output.chmod(0o777)
        before = sorted(str(p) for p in index.rglob("*"))
        result = _search(index, topics, output / "other.trec", "--engine", "seismic", prefix=OTHER_USER,
                         env=_fresh_cache(output))
        assert "built the" not in result.stderr and "cannot be written" not in result.stderr
        assert _lines(output / "other.trec") == _lines(lucene_run)
        assert sorted(str(p) for p in index.rglob("*")) == before
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=True)


@pytest.mark.parametrize("engine", ["bmp", "seismic"])
def test_a_damaged_engine_is_named_in_one_line_and_rebuilt(tmp_path, inputs, built_index, lucene_run, engine):
    """Case 26: engine files cut to half (a copy onto a full disk); and the same without the record of sizes (an
    engine built by an older clsr), where the engine's own reader fails (BMP: a Rust panic)."""
    pytest.importorskip(engine)
    corpus, topics = inputs
    index = _copy(built_index, tmp_path / "index")
    _search_here(index, topics, tmp_path / "first.trec", "--engine", engine)
    for drop_record in (False, True):
        (folder,) = (index / "engines").glob(f"{engine}-*")
        (data,) = folder.glob("index.*")
        data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
        if drop_record:
            (folder / "clsr-derived.json").unlink()
        result = _search(index, topics, tmp_path / "again.trec", "--engine", engine)
        warnings = [line for line in result.stderr.splitlines() if "is damaged" in line]
        assert len(warnings) == 1 and str(folder) in warnings[0], result.stderr
        assert "Traceback" not in result.stderr and "panicked" not in result.stderr
        assert "stack backtrace" not in result.stderr.lower()
        assert _lines(tmp_path / "again.trec") == _lines(lucene_run)
        assert (folder / "clsr-derived.json").exists()  # rebuilt, with its record


def test_four_first_searches_at_once_all_succeed_with_one_engine(tmp_path, inputs, built_index, lucene_run):
    """Case 27: four processes on an index with no engines/: one builds, the others wait and read it."""
    pytest.importorskip("seismic")
    corpus, topics = inputs
    index = _copy(built_index, tmp_path / "index")
    command = [sys.executable, "-m", "clsr.search", "--index", str(index), "--topics", str(topics), "--hits", "40",
               "--engine", "seismic"]
    processes = [subprocess.Popen([*command, "--output", str(tmp_path / f"run{n}.trec")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n in range(4)]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], [err[-2000:] for _, err in outcomes]
    assert sum("built the Seismic engine" in err for _, err in outcomes) == 1
    for n in range(4):
        assert _lines(tmp_path / f"run{n}.trec") == _lines(lucene_run)
    assert [p.name for p in (index / "engines").iterdir() if not p.name.endswith(".lock")] == \
        [p.name for p in (index / "engines").glob("seismic-*")]  # no hidden build folder left


def test_a_build_killed_by_sigkill_leaves_nothing_that_stays(tmp_path, inputs, built_index, lucene_run):
    """Case 31: SIGKILL (as the OOM killer sends) while the engine is built, twice; the next search removes both
    leftovers and builds it. The build is slowed so that the kill lands inside it."""
    pytest.importorskip("bmp")
    corpus, topics = inputs
    index = _copy(built_index, tmp_path / "index")
    slow_build = (
        "import sys, time\n"
        "from clsr.search import engines\n"
        "build = engines.BmpEngine._build\n"
        "def slow(*args):\n"
        "    build(*args)\n"
        "    print('building', flush=True)\n"
        "    time.sleep(120)\n"
        "engines.BmpEngine._build = staticmethod(slow)\n"
        "from clsr.search.command import COMMAND\n"
        "from clsr.options import main_for\n"
        "main_for(COMMAND, sys.argv[1:])\n")
    for _ in range(2):
        process = subprocess.Popen([sys.executable, "-c", slow_build, "--index", str(index), "--topics", str(topics),
                                    "--output", str(tmp_path / "killed.trec"), "--engine", "bmp"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process.stdout.readline().strip() == "building"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        # The second build removed the first one's leftover before it started: one stays, the latest.
        assert len(list((index / "engines").glob(".bmp-*.building-*"))) == 1
    assert not list((index / "engines").glob("bmp-*"))  # nothing that looks built
    result = _search(index, topics, tmp_path / "run.trec", "--engine", "bmp")
    assert not list((index / "engines").glob(".bmp-*.building-*"))
    assert result.stderr.count("left by a build that was killed") == 1
    assert _lines(tmp_path / "run.trec") == _lines(lucene_run)


@pytest.mark.parametrize("passages", [30, 60, 33])
def test_bmp_finds_what_lucene_finds_on_a_small_index(tmp_path, passages):
    """Case 25: one block (30 passages) gave 0 hits, two lost the last; now BMP's run equals Lucene's exactly."""
    pytest.importorskip("bmp")
    documents = load_corpus("scifact")[:passages]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
    topics = tmp_path / "queries.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in list(load_topics("scifact", "test").items())[:10]))
    index = _build(corpus, tmp_path / "index")
    for hits in ("10", "1000"):
        clsr(["search", "--index", str(index), "--topics", str(topics), "--output", str(tmp_path / "lucene.trec"),
              "--engine", "lucene", "--hits", hits])
        clsr(["search", "--index", str(index), "--topics", str(topics), "--output", str(tmp_path / "bmp.trec"),
              "--engine", "bmp", "--hits", hits])
        lucene = _lines(tmp_path / "lucene.trec")
        assert [line.replace("clsr", "") for line in _lines(tmp_path / "bmp.trec")] == \
               [line.replace("clsr", "") for line in lucene]
        assert len(lucene) == 10 * min(int(hits), passages)  # every passage shares some concept with each claim


def test_a_read_only_index_is_described_on_first_use_into_the_cache(tmp_path, inputs, built_index):
    """Case 23 for descriptions: an index built with --no-describe, read-only, is described once on first use
    (explain), into the cache; a second use reads them from there."""
    corpus, _ = inputs
    index = _copy(built_index, tmp_path / "index")
    docid = load_corpus("scifact")[0].id
    subprocess.run(["chmod", "-R", "a-w", str(index)], check=True)
    env = _fresh_cache(tmp_path)
    command = [*DROP_OVERRIDE, sys.executable, "-m", "clsr.interpret", "explain", "--index", str(index), "--query",
               "cell biology", "--docid", docid, "--corpus", str(corpus)]
    describe = [*DROP_OVERRIDE, sys.executable, "-m", "clsr.interpret", "describe", "--index", str(index),
                "--corpus", str(corpus)]
    try:
        first = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        second = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        refused = subprocess.run(describe, capture_output=True, text=True, timeout=900, env=env)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(index)], check=True)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "describing its concepts once" in first.stderr and "the concept catalogue goes to" in first.stderr
    (catalogue,) = (tmp_path / "cache" / "derived").glob("*/concepts.jsonl")
    assert not (index / "concepts.jsonl").exists()
    assert "describing" not in second.stderr and first.stdout == second.stdout
    assert "(no descriptions" not in first.stdout
    # `clsr describe` rewrites an index's own catalogue: on this one it says at once where to write instead.
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"clsr describe: error: {index} cannot be written here: pass --output FILE, and give that file to explain, "
        "serve and search with --catalogue")
    described = [json.loads(line) for line in catalogue.read_text().splitlines()]
    assert sum(bool(entry["description"]) for entry in described) == sum(entry["df"] > 0 for entry in described)
