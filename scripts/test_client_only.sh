#!/usr/bin/env bash
# The client without the server. Installs the package with only the client's dependencies
# (grpcio, protobuf, xxhash: no rocksdict, obstore, lz4 or prometheus-client) into a fresh
# .venv-client, checks that the node's dependencies are absent there, and runs the client's
# tests in it against nodes started from the full install in .venv (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}

if [ ! -x .venv/bin/stateserver ]; then
  echo "the nodes come from the full install in .venv: run scripts/test.sh first" >&2
  exit 1
fi
rm -rf .venv-client build
"$python" -m venv .venv-client
# A regular (not editable) install, as a stream operator's environment would have it; the
# client-test extra adds only the test runner and the health-check stubs the node launcher uses.
.venv-client/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv-client/bin/python -m pip install --quiet --disable-pip-version-check '.[client-test]'

echo "== client-only install"
# From a neutral directory, so that the source tree cannot stand in for the installed package.
(cd "$(mktemp -d)" && "$root/.venv-client/bin/python" - <<'PY'
import importlib.util
import sys

absent = [name for name in ("rocksdict", "obstore", "lz4", "prometheus_client")
          if importlib.util.find_spec(name) is not None]
if absent:
    sys.exit(f"the client-only install pulled in node dependencies: {absent}")
import stateserver.client
import stateserver.client.aio

if "site-packages" not in stateserver.client.__file__:
    sys.exit(f"stateserver.client came from {stateserver.client.__file__}, not the installed package")
for module in sorted(sys.modules):
    if module.startswith("stateserver.") and not module.startswith(("stateserver.client", "stateserver.protocol")):
        sys.exit(f"importing the client imported the node module {module}")
print("stateserver.client imports without the node's dependencies:", stateserver.client.__file__)
PY
)

echo "== client tests in the client-only install"
# The pytest script (not `python -m pytest`) keeps the repository root off sys.path.
set +e
STATESERVER_TEST_NODE_PYTHON="$root/.venv/bin/python" .venv-client/bin/pytest -p no:cacheprovider "$@" \
  tests/client tests/aio tests/test_public_api.py tests/test_wire.py tests/test_merge_operators.py tests/test_keygroups.py
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
