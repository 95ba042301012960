"""``python -m clsr.index`` (= ``clsr index``)."""

from .command import main

main()
