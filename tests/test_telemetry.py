"""OpenVINO and ONNX Runtime leave $HOME alone in a clsr process (clsr.encode.telemetry)."""

import os
import subprocess
import sys
import textwrap

import pytest

from clsr.encode.telemetry import ORT_TELEMETRY_ENV, quiet_runtimes

ENCODE_WITH_EACH_RUNTIME = """
    import sys
    from clsr.encode.dense import DenseEncoder, encoder_config
    for backend in ("openvino", "onnx", "onnx-int8"):
        vectors = DenseEncoder(encoder_config("minilm"), backend=backend).encode(["vitamin D", "bone density"])
        print(backend, vectors.shape)
    print("openvino" in sys.modules, "onnxruntime" in sys.modules, sys.modules.get("openvino_telemetry"))
"""


@pytest.mark.slow  # converts the encoder for OpenVINO and ONNX when the session's cache is cold (~20 s)
def test_encoding_with_openvino_and_onnx_writes_nothing_into_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}  # CLSR_CACHE: the test session's
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", ORT_TELEMETRY_ENV):  # clsr must set its own
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(ENCODE_WITH_EACH_RUNTIME)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:4] == ["openvino (2, 384)", "onnx (2, 384)", "onnx-int8 (2, 384)",
                                             "True True None"]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []  # before: intel/..., .cache/Microsoft/...


def test_a_users_onnx_runtime_telemetry_setting_is_kept(monkeypatch):
    monkeypatch.setenv(ORT_TELEMETRY_ENV, "0")
    quiet_runtimes()
    assert os.environ[ORT_TELEMETRY_ENV] == "0"
    monkeypatch.delenv(ORT_TELEMETRY_ENV)
    quiet_runtimes()
    assert os.environ[ORT_TELEMETRY_ENV] == "1"
