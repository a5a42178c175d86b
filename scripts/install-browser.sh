#!/usr/bin/env bash
# Installs the headless browser the dashboard's end-to-end tests drive (tests/web): Debian's chromium
# package at /usr/bin/chromium, and the playwright Python package in .venv. Does nothing when both are
# there. Playwright's own browser download (`playwright install`) is never used: it needs the network
# and fetches a browser build that is not Debian's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "Installing Debian's chromium (for the browser tests)..." >&2
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null; }
  else
    echo "No apt-get here: install chromium at /usr/bin/chromium yourself; the browser tests skip without it." >&2
  fi
fi

if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import playwright" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "playwright>=1.40"
fi
