"""``python -m clsr.search`` (= ``clsr search``)."""

from .command import main

main()
