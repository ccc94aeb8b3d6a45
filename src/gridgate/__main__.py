"""``python -m gridgate``: the same as the ``gridgate`` command."""

from gridgate.cli import main

main()
