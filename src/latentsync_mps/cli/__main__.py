"""`python -m latentsync_mps.cli`: the same as `lsync-port`."""

from latentsync_mps.cli import main

main()
