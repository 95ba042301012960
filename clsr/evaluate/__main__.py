"""``python -m clsr.evaluate`` (= ``clsr evaluate``)."""

from clsr.evaluate.command import COMMAND
from clsr.options import main_for

main_for(COMMAND, prog="python -m clsr.evaluate")
