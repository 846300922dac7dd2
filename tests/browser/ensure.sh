#!/usr/bin/env bash
# Makes sure the browser tests can run: Debian's chromium, and a Python venv with the
# `playwright` package (driving the system chromium; playwright's own browser download is
# never used). Idempotent; installs only what is missing. Prints two lines for `eval`:
#
#   export ARBOR_TEST_BROWSER_PYTHON=…/venv/bin/python
#   export ARBOR_TEST_CHROMIUM=/usr/bin/chromium
#
# Optional environment: ARBOR_CACHE_DIR (default ~/.cache/arbor) holds the venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/../services/lib.sh"

if ! command -v chromium >/dev/null 2>&1; then
    svc_log "installing chromium (Debian package)"
    svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq update
    svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq \
        install -y --no-install-recommends chromium >/dev/null ||
        svc_die "apt-get could not install chromium"
fi
chromium_bin="$(command -v chromium)"

venv="$ARBOR_CACHE_DIR/browser-venv"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 svc_venv "$venv" "$here/requirements.txt"
echo "export ARBOR_TEST_BROWSER_PYTHON=$venv/bin/python"
echo "export ARBOR_TEST_CHROMIUM=$chromium_bin"
