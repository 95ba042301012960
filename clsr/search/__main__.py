"""``python -m clsr.search`` (= ``clsr search``)."""

from clsr.options import main_for
from clsr.search.command import COMMAND

main_for(COMMAND, prog="python -m clsr.search")
