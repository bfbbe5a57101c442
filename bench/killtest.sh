#!/usr/bin/env bash
# The heavy variant of tests/test_durability.py: many more SIGKILLs at random points of
# send, bulk archive, import, key rotate and key rotate --reencrypt, each followed by
# integrity_check and a full doctor. The suite runs 25 rounds per operation; this runs
# ROUNDS (default 400). A failure prints SESSCTL_KILL_SEED=... to replay it exactly.
#   bench/killtest.sh              # 400 rounds each, a few minutes
#   ROUNDS=2000 bench/killtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SESSCTL_KILL_ROUNDS="${ROUNDS:-400}" exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_durability.py "$@"
