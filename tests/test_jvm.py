"""The JVM start-up, each case in a fresh process: the JVM can be started only once per process."""

import json
import math
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest

from clsr.jvm import java_environment


def run_fresh(code: str, env_update: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300)


def lucene_bm25(tf: int, doc_len: int, avg_len: float, df: int, n_docs: int, k1=0.9, b=0.4) -> float:
    # Lucene's BM25Similarity (no (k1+1) factor); exact for short documents, whose norms are lossless.
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * doc_len / avg_len))


def test_index_and_search_three_documents_in_a_fresh_process(tmp_path):
    result = run_fresh(f"""
        import json
        from clsr.data import Document
        from clsr.index import build_bm25_index
        from clsr.search import Bm25Searcher
        docs = [Document("d1", "the quick brown fox jumps"), Document("d2", "lazy dogs sleep all day"),
                Document("d3", "a fox and a dog are friends")]
        build_bm25_index(docs, r"{tmp_path / 'idx'}")
        searcher = Bm25Searcher(r"{tmp_path / 'idx'}")
        print(json.dumps({{q: searcher.search(q, 10) for q in ["fox", "dog"]}}))
    """)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout.strip().splitlines()[-1])
    # After stopping and stemming: d1 = quick brown fox jump (4), d2 = lazi dog sleep all dai (5),
    # d3 = fox dog friend (3); average length 4.
    assert [h[0] for h in hits["fox"]] == ["d3", "d1"]
    # Anserini rounds scores to 4 decimals (float32) so that runs reproduce across platforms.
    assert hits["fox"][0][1] == pytest.approx(round(lucene_bm25(1, 3, 4, 2, 3), 4), abs=1e-7)
    assert hits["fox"][1][1] == pytest.approx(round(lucene_bm25(1, 4, 4, 2, 3), 4), abs=1e-7)
    assert [h[0] for h in hits["dog"]] == ["d3", "d2"]


def test_pyserini_import_leaves_no_openai_key_behind():
    result = run_fresh("""
        import os
        from clsr.jvm import pyserini_lucene
        print(pyserini_lucene().LuceneImpactSearcher.__name__, os.environ.get("OPENAI_API_KEY"))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["LuceneImpactSearcher", "None"]


def test_a_users_openai_key_is_untouched():
    result = run_fresh("""
        import os
        from clsr.jvm import pyserini_lucene
        pyserini_lucene()
        print(os.environ["OPENAI_API_KEY"])
    """, {"OPENAI_API_KEY": "sk-user"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "sk-user"


def test_jvm_already_running_with_a_wrong_classpath_is_a_clear_error(tmp_path):
    result = run_fresh(f"""
        import jnius_config
        jnius_config.set_classpath(r"{tmp_path}")
        import jnius
        from clsr.jvm import start_jvm
        start_jvm()
    """, {k: v for k, v in java_environment().items() if k in ("JAVA_HOME", "PATH")})
    assert result.returncode != 0
    assert "JvmError: a JVM is already running without the Anserini fatjar" in result.stderr
    assert "anserini-" in result.stderr and str(tmp_path) in result.stderr


def test_child_processes_get_the_bundled_java_first_on_path():
    env = java_environment({"PATH": "/usr/bin"})
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, env=env)
    major = int(java.stderr.split('"')[1].split(".")[0])
    assert major >= 21, java.stderr
    assert env["PATH"].split(os.pathsep)[0].startswith(env["JAVA_HOME"])


def test_the_heap_limit_is_the_users_else_2_gib_where_the_jvm_default_is_larger():
    from clsr.jvm import JvmError, heap_options

    big, small = 64 << 30, 4 << 30
    assert heap_options({}, memory=big) == ["-Xmx2048m"]
    assert heap_options({}, memory=small) == []  # the JVM's own default, a quarter (1 GiB), is lower already
    assert heap_options({"CLSR_JVM_HEAP": "6g"}, memory=small) == ["-Xmx6g"]
    assert heap_options({"JAVA_TOOL_OPTIONS": "-Dfoo=1 -Xmx8g"}, memory=big) == []
    assert heap_options({"_JAVA_OPTIONS": "-XX:MaxRAMPercentage=50"}, memory=big) == []
    assert heap_options({"JAVA_TOOL_OPTIONS": "-Dname=-Xmx"}, memory=big) == ["-Xmx2048m"]  # not an option
    assert heap_options({}, configured=["-Xmx3g"], memory=big) == []
    with pytest.raises(JvmError, match="CLSR_JVM_HEAP='lots' is not a heap size"):
        heap_options({"CLSR_JVM_HEAP": "lots"})


HEAP_REPORT = """
    from clsr.jvm import DEFAULT_MAX_HEAP, heap_options, indexing_buffer_mb, max_heap_bytes
    print(max_heap_bytes(), indexing_buffer_mb(), DEFAULT_MAX_HEAP, bool(heap_options()))
"""
NO_USER_HEAP = {"CLSR_JVM_HEAP": "", "JAVA_TOOL_OPTIONS": "", "_JAVA_OPTIONS": ""}


@pytest.mark.parametrize("variables, heap_mib, buffer_mb", [
    ({"CLSR_JVM_HEAP": "512m"}, 512, 256),
    ({"JAVA_TOOL_OPTIONS": "-Xmx768m"}, 768, 384),  # the user's wins over clsr's default
    ({}, None, None),  # 2 GiB where the JVM's own default is larger, else that default
])
def test_the_jvm_starts_with_the_heap_limit_and_indexing_buffer_chosen(variables, heap_mib, buffer_mb):
    result = run_fresh(HEAP_REPORT, {**NO_USER_HEAP, **variables})
    assert result.returncode == 0, result.stderr
    *numbers, capped = result.stdout.split()[-4:]
    heap, buffer, default = map(int, numbers)
    if heap_mib is None:
        assert heap == default if capped == "True" else heap < default
        assert buffer == min(4096, heap >> 21)
    else:
        assert (heap, buffer) == (heap_mib << 20, buffer_mb)


# Pyserini 2.x fetches its prebuilt-index catalogue when pyserini.util is imported; these stub
# urllib's urlopen in a fresh process to play the network being there or not.
needs_pyserini_2 = pytest.mark.skipif(int(version("pyserini").split(".")[0]) < 2,
                                      reason="Pyserini 1.x keeps its catalogue in its code")
URLOPEN_STUB = """
    import io, json, urllib.error, urllib.request
    fetched = []
    def urlopen(url, *args, **kwargs):
        fetched.append(getattr(url, "full_url", url))
        if not ONLINE:
            raise urllib.error.URLError("no network (stub)")
        names = ["msmarco-v1-passage.unicoil", "msmarco-v2-passage.unicoil-0shot"]
        return io.BytesIO(json.dumps([{"name": n, "description": "fetched", "filename": "f", "urls": ["u"],
                                       "md5": "m", "size": 1} for n in names]).encode())
    urllib.request.urlopen = urlopen
"""


def run_fresh_with_network(online: bool, code: str) -> subprocess.CompletedProcess:
    return run_fresh(f"ONLINE = {online}\n" + textwrap.dedent(URLOPEN_STUB) + textwrap.dedent(code))


@needs_pyserini_2
def test_pyserini_2_imports_offline_and_later_lookups_fetch_again():
    result = run_fresh_with_network(False, """
        from clsr.jvm import pyserini_lucene
        pyserini_lucene()
        import pyserini.prebuilt_index_info as catalogue
        tries = len(fetched)
        import pyserini.search._base
        restored = all(module.urlopen is urlopen for module in (urllib.request, catalogue, pyserini.search._base))
        forgotten = catalogue.IMPACT_INDEX_INFO_MSMARCO._info is None
        try:
            catalogue.IMPACT_INDEX_INFO_MSMARCO["msmarco-v1-passage.unicoil"]
            later = "found"
        except urllib.error.URLError:
            later = "URLError"
        print(tries, restored, forgotten, later, len(fetched) > tries)
    """)
    assert result.returncode == 0, result.stderr
    # One failed fetch, not one per catalogue file; urlopen is the caller's again everywhere; the
    # placeholder is forgotten, so a later look-up goes to the network and fails as stock Pyserini does.
    assert result.stdout.split()[-5:] == ["1", "True", "True", "URLError", "True"]


@needs_pyserini_2
def test_pyserini_2_online_catalogue_is_left_alone():
    result = run_fresh_with_network(True, """
        from clsr.jvm import pyserini_lucene
        pyserini_lucene()
        import pyserini.prebuilt_index_info as catalogue
        print(len(fetched), catalogue.IMPACT_INDEX_INFO_MSMARCO_ALIASES["msmarco-passage-unicoil-d2q"]["description"],
              catalogue.IMPACT_INDEX_INFO_MSMARCO._info is not None)
    """)
    assert result.returncode == 0, result.stderr
    tries, description, kept = result.stdout.split()[-3:]
    assert int(tries) > 1 and description == "fetched" and kept == "True"
