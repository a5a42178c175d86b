#!/usr/bin/env bash
# Installs Debian's prometheus (the server and promtool) and prometheus-alertmanager, which the
# monitoring tests drive (tests/monitor: `promtool test rules` for every alert rule, and a real
# Prometheus + Alertmanager end to end). Does nothing when promtool and alertmanager are there.
# The packages start their services on the default ports (9090, 9093, 9100) where an init system
# runs them; the tests start their own servers on free ports, so those services are stopped and
# disabled again here.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "No apt-get here: install prometheus (promtool) and prometheus-alertmanager yourself; the monitoring tests skip without them." >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing Debian's prometheus and prometheus-alertmanager (for the monitoring tests)..." >&2
# No service may start during the install (a policy-rc.d that refuses is Debian's own way), and no
# recommended exporters come with it.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod +x "$POLICY" && ADDED_POLICY=1
fi
trap '[ -n "$ADDED_POLICY" ] && $SUDO rm -f "$POLICY"' EXIT
install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager
}
install >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 && install >/dev/null; }

# Belt and braces: where systemd runs, keep the packaged services off (the tests bind free ports).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter >/dev/null 2>&1 || true
fi
