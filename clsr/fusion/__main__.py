"""``python -m clsr.fusion`` (= ``clsr fuse``)."""

from clsr.fusion.command import COMMAND
from clsr.options import main_for

main_for(COMMAND, prog="python -m clsr.fusion")
