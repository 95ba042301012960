"""``python -m clsr.index`` (= ``clsr index``)."""

from clsr.index.command import COMMAND
from clsr.options import main_for

main_for(COMMAND, prog="python -m clsr.index")
