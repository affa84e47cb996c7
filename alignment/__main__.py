"""``python -m alignment``: see ``alignment/cli.py``."""

from alignment.cli import main

main()
