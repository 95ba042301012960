"""OpenVINO conversion of a dense encoder, cached and built on first use, offline, and its runtime.

The converted model lives under ``$CLSR_CACHE/openvino/<model fingerprint>/`` (chosen by
:mod:`clsr.encode.dense`, which this module does not import) as OpenVINO IR, ``model.xml`` plus
``model.bin``, with fp32 weights: the transformer up to its last hidden state. Both files are
written into a temporary folder that is renamed into place, so an interrupted build leaves
nothing that looks finished. Pooling and normalisation stay in :class:`clsr.encode.dense.DenseEncoder`.

Why OpenVINO (``benchmarks/encoding.py``): on CPUs its oneDNN kernels with fused attention ran
MiniLM 1.3-1.5x faster than PyTorch at the same precision, with cosine 0.99997 to torch fp32 in
bf16. The model is converted with OpenVINO's PyTorch frontend directly, not ``ov.convert_model``,
because the latter sends usage telemetry to Google Analytics unless the user has opted out.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FILE = "model.xml"  # beside it, model.bin


def require() -> None:
    """Raise ImportError naming the package when OpenVINO is missing."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        raise ImportError("the openvino encoder backend needs OpenVINO, a clsr dependency: "
                          "pip install 'openvino>=2026.4,<2027'")


def convert(model, tokenizer, directory: Path) -> None:
    """Convert a Hugging Face encoder (fp32, eval mode) to OpenVINO IR in ``directory``.

    Inputs are named as the tokenizer names them, with batch and length dynamic; the one output is
    the last hidden state (batch, tokens, hidden) float32. Tracing needs neither the network nor
    telemetry.
    """
    import openvino as ov
    import torch
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    from clsr.encode.tracing import traceable

    wrapped, names, example = traceable(model, tokenizer)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the tracer's notes on Python booleans in transformers' masking code
        decoder = TorchScriptPythonDecoder(wrapped, example_input=example)
        frontend = FrontEndManager().load_by_framework("pytorch")
        converted = frontend.convert(frontend.load(decoder))
    for port, name in zip(converted.inputs, names):
        port.get_tensor().set_names({name})
    converted.reshape({port: ov.PartialShape([-1, -1]) for port in converted.inputs})
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    try:
        ov.save_model(converted, str(tmp / FILE), compress_to_fp16=False)  # fp16 weights would change the numerics
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / FILE).exists():
                raise  # otherwise another process converted it meanwhile, as good as ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def artefact(model, tokenizer, directory: Path) -> Path:
    """The IR file in ``directory`` (one per model's weights), converted from ``model`` if not yet there.

    Raises ImportError when OpenVINO is not installed.
    """
    require()
    if not (directory / FILE).exists():
        log.info("converting the encoder to OpenVINO under %s (once)", directory)
        convert(model, tokenizer, directory)
    return directory / FILE


@functools.cache
def runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this CPU (AVX512-BF16 or AMX). Elsewhere it runs a bf16
    inference hint in fp32 without a word, so an encoder must not record bf16 there."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class Runtime:
    """One converted encoder compiled twice, lazily, for OpenVINO's CPU plugin:

    * for latency (one stream using every thread), for a single batch such as one query;
    * for throughput (OpenVINO picks the streams, each with some of the threads), for many batches,
      which it runs concurrently: 1.05-1.1x the batches per second of the latency setting on 2 cores.

    ``precision`` is "bf16" or "fp32" (OpenVINO's inference precision; weights stay fp32 in the IR).
    """

    def __init__(self, model, threads: int, precision: str, core=None):
        import openvino as ov

        self.core = core or ov.Core()
        self.model = model
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.config = {"INFERENCE_NUM_THREADS": threads,
                       "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self._compiled: dict[str, object] = {}
        self._queue = None
        self._queue_lock = threading.Lock()  # one run at a time on the shared queue (a server may call from threads)

    @classmethod
    def load(cls, path: Path, threads: int, precision: str) -> Runtime:
        """The runtime of the IR file at ``path``."""
        import openvino as ov

        core = ov.Core()
        runtime = cls(core.read_model(str(path)), threads, precision, core)
        runtime.path = path
        return runtime

    @property
    def streams(self) -> int:
        """How many batches the throughput setting runs at once."""
        return int(self.compiled("THROUGHPUT").get_property("NUM_STREAMS"))

    def compiled(self, hint: str):
        if hint not in self._compiled:
            self._compiled[hint] = self.core.compile_model(self.model, "CPU", {**self.config, "PERFORMANCE_HINT": hint})
        return self._compiled[hint]

    def run(self, batches: Iterable[dict[str, np.ndarray]], consume: Callable[[int, np.ndarray], None],
            queued: bool = False) -> None:
        """Run every batch of int64 inputs and call ``consume(batch number, last hidden state)`` for each,
        in completion order, one call at a time (from OpenVINO's threads). The hidden state (batch,
        tokens, hidden) float32 is only valid during the call. ``batches`` is read as requests free
        up, so a generator keeps only a few batches in memory. An exception from ``consume`` stops
        the run and is raised here.

        One batch runs on the latency setting unless ``queued``: then every batch, however few, runs on the
        throughput setting, so that a text's output never depends on how many others came with it (the two
        settings split threads differently, and so may round differently).
        """
        batches = iter(batches)
        first = list(itertools.islice(batches, 2))
        if len(first) < 2 and not queued:
            for number, feeds in enumerate(first):
                request = self.compiled("LATENCY").create_infer_request()
                request.infer(feeds)
                consume(number, request.get_output_tensor(0).data)
            return
        with self._queue_lock:
            self._run_queued(itertools.chain(first, batches), consume)

    def _run_queued(self, batches: Iterable[dict[str, np.ndarray]], consume: Callable[[int, np.ndarray], None]) -> None:
        import openvino as ov

        if self._queue is None:
            compiled = self.compiled("THROUGHPUT")
            self._queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = self._queue
        lock = threading.Lock()
        failures: list[BaseException] = []

        def done(request, number):
            with lock:
                if failures:
                    return
                try:
                    consume(number, request.get_output_tensor(0).data)
                except BaseException as error:  # raised again in the caller's thread below
                    failures.append(error)

        queue.set_callback(done)
        for number, feeds in enumerate(batches):
            if failures:
                break
            queue.start_async(feeds, number)  # waits while every request is busy
        queue.wait_all()
        if failures:
            raise failures[0]
