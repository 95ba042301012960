"""Dense encoding: passages and queries to embeddings with a local Hugging Face encoder (`dense`), run by
OpenVINO (`openvino`), ONNX Runtime (`onnx`) or torch (traced, `tracing`), in one process or on Ray (`ray`).
Command: `clsr encode` (`command`).

Importing this package switches off OpenVINO's and ONNX Runtime's telemetry, which would otherwise write into
$HOME (`telemetry`): it must happen before either runtime is imported, and every backend is imported through here.
"""

from clsr.encode.telemetry import quiet_runtimes

quiet_runtimes()

from clsr.encode.dense import DenseEncoder, EncoderConfig, encode_corpus, encoder_config  # noqa: E402

__all__ = ["DenseEncoder", "EncoderConfig", "encode_corpus", "encoder_config"]
