#!/usr/bin/env bash
# The whole test suite: starts throwaway Redis, PostgreSQL and Neo4j on loopback
# (installing them on first use), makes sure headless chromium and playwright are there
# for the browser tests (tests/browser/ensure.sh), schemathesis for the OpenAPI tests
# (tests/openapi/ensure.sh) and wrk and pgbench for the benchmark harness
# (benches/tools.sh), then runs every test of the workspace against them. Extra
# arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash benches/tools.sh >&2 # wrk and pgbench, for the harness's instrument check
browser_env="$(bash tests/browser/ensure.sh)"
eval "$browser_env"
openapi_env="$(bash tests/openapi/ensure.sh)"
eval "$openapi_env"
exec bash tests/services/with-services.sh cargo test --workspace --release "$@"
