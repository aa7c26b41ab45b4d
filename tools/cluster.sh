#!/usr/bin/env bash
# Sets up everything on a fresh machine (Python, pip and gcc are all it assumes) and starts a
# local 3-member raftkv cluster on 127.0.0.1 in the foreground, data under ./raftkv-data.
# Ctrl-C stops all members. Arguments go to the launcher, e.g. --members 5 or --data-root DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python -m raftkv.cli.local_cluster "$@"
