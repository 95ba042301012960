"""Keeps OpenVINO and ONNX Runtime from writing into $HOME (and from sending telemetry) from a clsr process.

Found by encoding a few texts with ``HOME`` set to an empty folder (``tests/test_telemetry.py`` does it again):

* ``import openvino`` (2026.4) imports its model converter, ``openvino.tools.ovc``, whose import starts the
  ``openvino-telemetry`` package: it writes a client id and usage counters to ``~/intel/openvino_ga_cid`` and
  ``~/intel/stats`` and sends a Google Analytics event, unless ``~/intel/openvino_telemetry`` says no (OpenVINO's
  documented opt-out, itself a file in $HOME). That package reads no environment variable, but OpenVINO is written
  to run without it: when ``import openvino_telemetry`` fails it uses its no-op
  ``openvino.tools.ovc.telemetry_stub``. So clsr makes that import fail in its own process (a ``None`` entry in
  ``sys.modules``, Python's way to block a module); other processes, and OpenVINO's own tools, are untouched.
* ``import onnxruntime`` (1.32 on Linux) writes a device id and a database under
  ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` (``$XDG_CACHE_HOME/Microsoft/...`` when that is set) for
  its telemetry. ``ORT_DISABLE_TELEMETRY=1``, read by its native library as it loads, stops both; clsr sets it
  unless the user has set it, and child processes (Ray workers) inherit it.

Both settings must be in place before the runtime is first imported, so `clsr.encode` applies them when it is
imported, before any of its backends is.
"""

from __future__ import annotations

import os
import sys

ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
OPENVINO_TELEMETRY_MODULE = "openvino_telemetry"


def quiet_runtimes() -> None:
    """Switch off OpenVINO's and ONNX Runtime's telemetry, and with it their files in $HOME, for this process.

    Safe to call many times. Too late for a runtime already imported (whoever imported it first has chosen): then
    its setting is left as it is.
    """
    os.environ.setdefault(ORT_TELEMETRY_ENV, "1")
    if "openvino" not in sys.modules:
        sys.modules.setdefault(OPENVINO_TELEMETRY_MODULE, None)
