"""``python -m stateserver.cli``: the command line."""
from stateserver.cli.main import main

raise SystemExit(main())
