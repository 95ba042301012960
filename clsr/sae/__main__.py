"""``python -m clsr.sae train-sae|adapt-sae`` (= ``clsr train-sae, clsr adapt-sae``)."""

from clsr.options import stage_main
from clsr.sae.command import COMMANDS

stage_main(COMMANDS, prog="python -m clsr.sae")
