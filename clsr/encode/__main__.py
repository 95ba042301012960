"""``python -m clsr.encode`` (= ``clsr encode``)."""

from clsr.encode.command import COMMAND
from clsr.options import main_for

main_for(COMMAND, prog="python -m clsr.encode")
