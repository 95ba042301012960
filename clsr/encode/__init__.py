"""Dense encoding: passages and queries to embeddings with a local Hugging Face encoder (`dense`), run by
OpenVINO (`openvino`), ONNX Runtime (`onnx`) or torch (traced, `tracing`), in one process or on Ray (`ray`).
Command: `clsr encode` (`command`)."""

from clsr.encode.dense import DenseEncoder, EncoderConfig, encode_corpus, encoder_config

__all__ = ["DenseEncoder", "EncoderConfig", "encode_corpus", "encoder_config"]
