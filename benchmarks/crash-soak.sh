#!/usr/bin/env bash
# Longer crash soak than CI runs: SIGKILL `snapfs backup` at random moments, many times,
# then check that only whole snapshots exist and that each restores byte-identical.
# Usage: benchmarks/crash-soak.sh [ITERATIONS]   (default 500; run as root from the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p .
SNAPFS_CRASH_ITERATIONS="${1:-500}" npx tap dist/test/backup-crash.test.js --timeout 0 -R terse
