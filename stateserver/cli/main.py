"""The ``stateserver`` command: run a node, check its health, inspect and restore state.

Exit codes: 0 success; 1 the node failed (cannot start, a shard did not close cleanly) or is not
healthy; 2 invalid usage or configuration, reported on stderr before anything starts.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from stateserver.cli import checkpoints as cli_checkpoints
from stateserver.cli import compaction as cli_compaction
from stateserver.node.health import check_health
from stateserver.node.logs import configure_logging
from stateserver.node.server import Node, NodeStartError, config_from_settings, exit_code_after_serving, version
from stateserver.supervisor.sizing import resolve_workers
from stateserver.supervisor.supervisor import run_supervisor
from stateserver.config import SettingsError, add_settings_arguments, settings_from_args

log = logging.getLogger("stateserver.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2


def _serve(options: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(options, os.environ)
    except SettingsError as exc:
        print(f"stateserver serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    log.info("node starting", extra={"version": version(), "settings": settings.loggable()})
    workers = resolve_workers(workers=settings.workers, port=settings.port, metrics_port=settings.metrics_port,
                              block_cache_bytes=settings.block_cache_bytes,
                              write_buffer_bytes=settings.write_buffer_bytes,
                              memory_budget_bytes=settings.memory_budget_bytes)
    if workers > 1:
        return run_supervisor(settings, workers)
    try:
        node = Node(config_from_settings(settings))
        clean = node.serve_until_signalled()
    except NodeStartError as exc:
        log.error("node cannot start", extra={"reason": str(exc)})
        return EXIT_FAILED
    return exit_code_after_serving(node, clean, EXIT_FAILED)


def _health(options: argparse.Namespace) -> int:
    report = check_health(options.address, timeout=options.timeout, service=options.service)
    print(report.message, file=sys.stdout if report.serving else sys.stderr)
    return 0 if report.serving else EXIT_FAILED


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, such as 127.0.0.1:7700, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateserver", description="A disaggregated keyed-state backend for stream processing.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a node until SIGTERM or SIGINT, then drain and exit",
                                description="Run a node. Settings come from flags, then STATESERVER_* "
                                "environment variables, then the --config file, then defaults.")
    add_settings_arguments(serve)
    serve.set_defaults(run=_serve)
    health = commands.add_parser("health", help="ask a node's gRPC health service; exit 0 if it is serving",
                                 description="Exit 0 when the node answers SERVING, 1 otherwise, with one line "
                                 "saying why. For container health checks and Kubernetes probes.")
    health.add_argument("--address", type=_address, default="127.0.0.1:7700", metavar="HOST:PORT",
                        help="the node's gRPC address (default %(default)s)")
    health.add_argument("--timeout", type=_positive_seconds, default=3.0, metavar="SECONDS",
                        help="how long to wait for the answer (default %(default)s)")
    health.add_argument("--service", default="", help="a service name, such as stateserver.v1.StateService; "
                        "empty (the default) asks about the node as a whole")
    health.set_defaults(run=_health)
    cli_checkpoints.register_commands(commands)
    cli_compaction.register_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    return int(options.run(options))


if __name__ == "__main__":
    sys.exit(main())
