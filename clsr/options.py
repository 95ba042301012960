"""What every clsr command shares: the `Command` record, the runner that turns a failure into one
line on stderr, and the argument groups that several commands take.

Each stage module owns its command (a `Command` with its parser and `run`) and its
``python -m clsr.<module>`` entry point; `clsr.cli` only dispatches. This module imports nothing
else of clsr but its errors, so that the arrows run one way: cli -> stages -> options.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from .errors import ClsrError, UsageError

SOURCE_HELP = ("a BEIR folder, a collection name under $CLSR_DATA (e.g. scifact), a .jsonl/.tsv file, "
               "or an ir_datasets id (e.g. beir/scifact/test; needs the network)")


@dataclass(frozen=True)
class Command:
    """One subcommand: ``clsr NAME`` and ``python -m clsr.<module>`` build the same parser."""

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def add_common_arguments(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """-v and --debug, taken before or after a subcommand's name (``subcommand``: leave the value given
    before it, since argparse would otherwise reset it to the default)."""
    default = argparse.SUPPRESS if subcommand else False
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress details")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, show the Python traceback instead of one line")


def build_parser(command: Command, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or f"clsr {command.name}", description=command.description)
    command.add_arguments(parser)
    add_common_arguments(parser)
    return parser


def execute(command: Command, args: argparse.Namespace) -> None:
    """Run a parsed command. Any failure becomes one line on stderr and a non-zero exit, unless --debug.

    Exit status: 1 for an error, 130 when interrupted (as a shell reports SIGINT).
    """
    args.command = command.name
    configure_logging(args.verbose)
    try:
        command.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"clsr {command.name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`clsr explain ... | head`): not an error of this command. As the Python docs
        # advise, stdout goes to devnull so that flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a pipe writer cut short
    except ClsrError as e:
        if args.debug:
            raise
        fail(command.name, str(e))
    except Exception as e:  # a bug or an environment problem: still one line, with the way to see more
        if args.debug:
            raise
        fail(command.name, f"{type(e).__name__}: {e} (run again with --debug for the traceback)")


class _LogFormat(logging.Formatter):
    """clsr's own notes as ``clsr: message``; anything else, or any warning, as ``LEVEL logger: message``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.startswith("clsr"):
            return f"clsr: {record.getMessage()}"
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """clsr's own notes (what was read, which split, rates at the end of a stage) always show on stderr;
    ``verbose`` adds every library's. Warnings always show."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("clsr").setLevel(logging.INFO)
    # faiss-cpu's loader notes at INFO that a per-ISA module (swigfaiss_avx2) is missing: recent wheels
    # dispatch by CPU inside one library and no longer ship those modules, so the note reads as a fault
    # that is not there. Its warnings and errors still show.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def fail(command_name: str, message: str) -> NoReturn:
    """``clsr NAME: error: MESSAGE`` as one line on stderr (a message's detail lines are joined), exit status 1."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    sys.exit(f"clsr {command_name}: error: {one_line}")


def main_for(command: Command, argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """The ``python -m clsr.<module>`` entry point of a stage."""
    parser = build_parser(command, prog)
    execute(command, parser.parse_args(argv))


def add_encoder_options(parser: argparse.ArgumentParser, default_help: str = "minilm, bundled, works offline") -> None:
    """The dense encoder's flags; `clsr.dense.encoder_from_args` reads them."""
    group = parser.add_argument_group("dense encoder")
    group.add_argument("--encoder",
                       help=f"preset (minilm, bge), a local Hugging Face model folder, or a hub id "
                            f"(default: {default_help})")
    group.add_argument("--pooling", choices=["mean", "cls"], help="override the preset's pooling")
    group.add_argument("--query-prefix", help="text put before every query (bge's instruction for the bge preset)")
    group.add_argument("--max-length", type=int, help="tokens per text (preset default: 256 minilm, 512 bge)")
    group.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                       help="keep raw pooled vectors instead of L2-normalising them")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                       help="openvino and torch backends: auto = bf16 where the CPU has bf16 instructions "
                            "(about 2x faster, cosine 0.9999 to fp32), else fp32")
    group.add_argument("--encoder-backend", choices=["auto", "openvino", "torch", "onnx", "onnx-int8"],
                       help="encoder runtime: openvino (OpenVINO, the fastest on CPUs), torch, onnx (ONNX Runtime, "
                            "fp32) or onnx-int8 (int8 matrix products, cosine ~0.995 to fp32); default: the index's "
                            "when searching, else auto = openvino on the CPU, torch on --device cuda "
                            "(docs/encoding-speed.md)")
    group.add_argument("--encode-batch-size", type=positive_int,
                       help="texts per encoder batch (default: 8 with openvino, 32 with the other backends)")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def add_concept_query_options(parser: argparse.ArgumentParser) -> None:
    """How queries of a concept index are encoded; `clsr.index.concept_encoder_options` reads them."""
    group = parser.add_argument_group("concept index queries")
    group.add_argument("--sae", help="SAE folder (default: the one the index was built with)")
    group.add_argument("--query-k", type=int, help="concepts per query (default: the index's, see its manifest)")
    group.add_argument("--query-mode", choices=["topk", "projected"],
                       help="topk: the query's own top-K code; projected: max(0, q . atom) on every concept, the K "
                            "largest kept (default: the index's)")
    group.add_argument("--force", action="store_true",
                       help="search even if the encoder or SAE differs from the one in the index's manifest")


def add_steering_options(parser: argparse.ArgumentParser) -> None:
    """Concept steering; `clsr.describe.steering_from_args` reads them."""
    group = parser.add_argument_group("steering (concept indexes)")
    group.add_argument("--boost", action="append", default=[], metavar="cID=FACTOR",
                       help="multiply a concept's query weight, e.g. c123=2.0 (a concept the query lacks is added "
                            "at its mean weight times FACTOR); repeatable")
    group.add_argument("--suppress", action="append", default=[], metavar="cID",
                       help="remove a concept from every query; repeatable")
    group.add_argument("--boost-concept", action="append", default=[], metavar="TEXT[=FACTOR]",
                       help='boost the concepts whose descriptions best match TEXT, e.g. "employment, salary=3" '
                            "(needs concepts.jsonl from clsr describe); prints which it picked")
    group.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's)")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """Encoding on Ray; `clsr.ray_encoding.shards_from_args` reads them."""
    group = parser.add_argument_group("encoding on Ray (pip install 'clsr[ray]')")
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="encode on Ray: a local instance with no ADDRESS, else the cluster at ADDRESS "
                            "(e.g. auto, ray://head:10001)")
    group.add_argument("--ray-workers", type=positive_int,
                       help="encoder actors, one CPU each (default: one per CPU of the Ray cluster)")
    group.add_argument("--shards", help="folder for the encoded shards (default: beside the output, *.shards)")


def add_milvus_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Where a Milvus collection lives; `clsr.milvus` reads them."""
    group = parser.add_argument_group("Milvus (pip install 'clsr[milvus]')")
    group.add_argument("--uri", default="clsr-milvus.db", required=required,
                       help="a file path (Milvus Lite, embedded; default clsr-milvus.db) or a server address "
                            "such as http://localhost:19530")
    group.add_argument("--collection", default="clsr", help="collection name (default clsr)")


def positive_int(text: str) -> int:
    """argparse type for counts such as --hits: refused at parse time, not deep inside a search."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


__all__ = ["Command", "SOURCE_HELP", "UsageError", "add_common_arguments", "add_concept_query_options",
           "add_encoder_options", "add_steering_options", "build_parser", "execute", "fail", "main_for",
           "positive_int"]


# -- typed configs that generate their own flags (as EleutherAI/sparsify's): one declaration per setting ------

def add_config_options(parser, config_type, *, skip: Sequence[str] = (), short: dict[str, str] | None = None,
                       prefix: str = "") -> None:
    """One flag per field of the dataclass ``config_type``: ``--{prefix}{field-name}``, typed and defaulted by the
    field, helped by its ``metadata["help"]`` (the default is appended). ``skip``: fields set elsewhere (e.g.
    device, from the encoder options). ``short``: extra spellings, {field: "-k"}.

    Field types taken: int, float, str and bool (a default-True bool gets ``--no-{name}``), their ``| None``
    forms (no default shown), and ``tuple[int, ...]`` (the flag repeats). Raises TypeError for any other.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if field.name in skip:
            continue
        name = prefix + field.name.replace("_", "-")
        kind, optional = _flag_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        shown = "" if field.default is None or field.default == () else f"default {field.default}"
        help_text = f"{help_text} ({shown})" if help_text and shown else help_text or shown
        flags = [f"--{name}", *([short[field.name]] if short and field.name in short else [])]
        dest = prefix.replace("-", "_") + field.name
        if kind is bool:
            flag = f"--no-{name}" if field.default else f"--{name}"
            parser.add_argument(flag, dest=dest, action="store_false" if field.default else "store_true",
                                help=field.metadata.get("help"))
        elif kind == "ints":
            parser.add_argument(*flags, dest=dest, type=int, action="append", help=help_text)
        else:
            parser.add_argument(*flags, dest=dest, type=kind, default=field.default, help=help_text)


def config_from_args(config_type, args: argparse.Namespace, *, prefix: str = "", **given):
    """The ``config_type`` the flags of :func:`add_config_options` ask for; ``given`` fields (those skipped
    there) come from elsewhere."""
    import dataclasses

    values = dict(given)
    for field in dataclasses.fields(config_type):
        dest = prefix.replace("-", "_") + field.name
        if field.name in values or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        values[field.name] = tuple(value or ()) if isinstance(field.default, tuple) else value
    return config_type(**values)


def _flag_type(hint) -> tuple[object, bool]:
    """(int | float | str | bool | "ints", optional) for a field's type hint."""
    import types
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _flag_type(inner)[0], True
    if typing.get_origin(hint) is tuple and args[:1] == (int,):
        return "ints", False
    if hint in (int, float, str, bool):
        return hint, False
    raise TypeError(f"no flag for a field of type {hint!r}")
