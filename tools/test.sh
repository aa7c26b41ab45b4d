#!/usr/bin/env bash
# Sets up everything on a fresh machine (Python, pip and gcc are all it assumes) and runs the
# whole test suite: a virtualenv in .venv, raftkv built from source with its C extensions,
# then pytest with the C backend required, then the unit tests again on the pure-Python twins.
# Extra arguments go to the first pytest run (e.g. tools/test.sh -k btree).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
# The real etcdctl (Debian's etcd-client 3.4.23) drives raftkv's etcd gRPC API in tests/api.
bash tools/install_etcd.sh >/dev/null

# pytest exits 5 when it collected no tests: that is a failure here, never a silent pass.
run_pytest() {
    local rc=0
    .venv/bin/python -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "tools/test.sh: pytest collected no tests for: $*" >&2
        exit 1
    fi
    return "$rc"
}

echo "== whole suite, C backend required"
RAFTKV_REQUIRE_C=1 run_pytest -n 2 "$@"
echo "== unit tests on the pure-Python twins (RAFTKV_PUREPYTHON=1)"
RAFTKV_PUREPYTHON=1 run_pytest -n 2 tests/unit
