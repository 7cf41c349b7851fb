#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages) for the browser tests.
#
# Idempotent and quick when /usr/bin/chromium and /usr/bin/chromedriver are already there.
# Never fails the build: without root, apt-get or network it says why and exits 0, and the
# browser tests (tests/browser/test_html_browser.py) then skip with a clear reason.
set -uo pipefail

CHROMIUM=${PIPESIM_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${PIPESIM_CHROMEDRIVER:-/usr/bin/chromedriver}
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  exit 0
fi

say() { echo "ensure-chromium: $*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get here; browser tests will be skipped"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    say "not root and no password-less sudo; browser tests will be skipped"
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# Fail fast without network instead of retrying for minutes.
APT_OPTS=(-o Acquire::Retries=0 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20)
LIMIT=${ENSURE_CHROMIUM_TIMEOUT:-900}

say "installing chromium and chromium-driver with apt-get"
if ! timeout "$LIMIT" $SUDO apt-get "${APT_OPTS[@]}" update -qq; then
  say "apt-get update failed (no network?); browser tests will be skipped"
  exit 0
fi
if ! timeout "$LIMIT" $SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null; then
  say "apt-get install chromium chromium-driver failed; browser tests will be skipped"
  exit 0
fi
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  say "ready: $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
else
  say "packages installed but $CHROMIUM or $CHROMEDRIVER is missing"
fi
exit 0
