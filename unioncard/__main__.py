"""``python -m unioncard``: the command line, as the ``unioncard`` script (the daemon
runs its own syncs so, in a process of their own)."""

from unioncard.cli import main

main()
