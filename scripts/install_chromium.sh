#!/usr/bin/env bash
# Debian's chromium for the explorer's end-to-end test (make test-browser). Playwright drives it
# through executablePath=/usr/bin/chromium, so Playwright's own browser download is never needed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    /usr/bin/chromium --version
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
