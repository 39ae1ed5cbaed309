"""The ``stateserver`` command: run a node, inspect and restore state."""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from stateserver import cli_checkpoints
from stateserver.server import Node, NodeConfig


def _serve(options: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = NodeConfig(host=options.host, port=options.port, data_dir=pathlib.Path(options.data_dir),
                        max_message_bytes=options.max_message_bytes, snapshot_url=options.snapshot_url,
                        nodes=tuple(n for n in options.nodes.split(",") if n), node_id=options.node_id)
    Node(config).serve_until_signalled()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateserver", description="A disaggregated keyed-state backend for stream processing.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7700)
    serve.add_argument("--data-dir", required=True)
    serve.add_argument("--max-message-bytes", type=int, default=64 << 20)
    serve.add_argument("--snapshot-url", default="")
    serve.add_argument("--nodes", default="", help="host:port,... or dns:NAME:PORT")
    serve.add_argument("--node-id", default="")
    serve.set_defaults(run=_serve)
    cli_checkpoints.register_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    return int(options.run(options))


if __name__ == "__main__":
    sys.exit(main())
