#!/usr/bin/env bash
# The WebSocket fuzzer (tests/e2e/test_ws_fuzz.py) at a larger count than CI's 100,000 frames:
#   bench/ws_fuzz.sh [FRAMES]    (default 1,000,000; 100,000 took 5 minutes on a 2-core machine at load average 10)
# It prints the frames sent, the replies by type and the closes by code; it fails on any 5xx error, undocumented
# close, error line in the server log, or a bystander that lost, repeated or reordered a message.
set -euo pipefail
cd "$(dirname "$0")/.."
FLARE_FUZZ_FRAMES=${1:-1000000} exec .venv/bin/pytest -q -s -p no:cacheprovider --timeout 0 tests/e2e/test_ws_fuzz.py
