#!/usr/bin/env bash
# Installs Prometheus for the local dev cluster when it is missing (idempotent).
# Debian/Ubuntu: the distribution package (bookworm ships 2.42). The package's own
# systemd service is irrelevant: `berth dev up` runs its own prometheus process with
# its own config and data directory under the dev root, on 127.0.0.1 only.
# Prints the prometheus binary path last.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  command -v prometheus
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: prometheus is not installed and apt-get is not available;" >&2
  echo "  install Prometheus 2.x so that \`prometheus\` is on PATH, then retry" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "[install-prometheus] apt-get install prometheus (first time only)" >&2
# policy-rc.d 101 keeps the package's service from being started by the install.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends prometheus >&2
command -v prometheus
