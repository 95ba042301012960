"""``python -m clsr.interpret describe|explain|serve`` (= ``clsr describe, clsr explain, clsr serve``)."""

from clsr.interpret.command import COMMANDS
from clsr.options import stage_main

stage_main(COMMANDS, prog="python -m clsr.interpret")
