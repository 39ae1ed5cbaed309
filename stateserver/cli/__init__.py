"""The `stateserver` command line: serve, checkpoints, verify, restore, gc, compact."""
