#!/usr/bin/env bash
# A long soak of the seeded fault suite (tests/fault): N trials, half on file://, half on SeaweedFS S3.
#
#   scripts/fault_soak.sh N [BASE_SEED] [SUMMARY]
#
# Seeds BASE_SEED .. BASE_SEED+N-1 (default base: 1000). Writes a markdown summary (trials, faults
# injected by kind, failures with the command that replays each, and the command that reproduces
# the whole soak) to SUMMARY (default benchmarks/results/fault_soak.md). Exit status: pytest's.
set -uo pipefail
cd "$(dirname "$0")/.."
trials="${1:?usage: scripts/fault_soak.sh N [BASE_SEED] [SUMMARY]}"
base="${2:-1000}"
summary="${3:-benchmarks/results/fault_soak.md}"
mkdir -p "$(dirname "$summary")"
# Every trial is a test of its own; the per-test timeout stays pytest's default.
FAULT_SOAK_COMMAND="scripts/fault_soak.sh $trials $base $summary" \
.venv/bin/python -m pytest tests/fault -q -p no:cacheprovider \
    --fault-trials "$trials" --fault-base-seed "$base" --fault-summary "$summary"
status=$?
echo "summary: $summary"
exit "$status"
