#!/usr/bin/env bash
# Makes sure the OpenAPI tests (tests/openapi.rs) can run: a Python venv with
# schemathesis (fuzzes the live server against its description) and
# openapi-spec-validator (checks the description is valid OpenAPI 3.1). Idempotent;
# installs only what is missing. Prints two lines for `eval`:
#
#   export ARBOR_TEST_SCHEMATHESIS=…/venv/bin/schemathesis
#   export ARBOR_TEST_OPENAPI_PYTHON=…/venv/bin/python
#
# Optional environment: ARBOR_CACHE_DIR (default ~/.cache/arbor) holds the venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/../services/lib.sh"

venv="$ARBOR_CACHE_DIR/openapi-venv"
svc_venv "$venv" "$here/requirements.txt"
echo "export ARBOR_TEST_SCHEMATHESIS=$venv/bin/schemathesis"
echo "export ARBOR_TEST_OPENAPI_PYTHON=$venv/bin/python"
