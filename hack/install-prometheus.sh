#!/usr/bin/env bash
# Builds (or reuses) the Prometheus server for the local dev cluster from Go modules,
# pinned in hack/prometheus/go.mod, into a cache outside the repository. Prints the
# binary path last. Idempotent: a second run with a warm cache is a no-op.
#
# Why not Debian's `prometheus` package: Debian builds it without Kubernetes service
# discovery (client-go is not packaged), and the dev cluster needs kubernetes_sd_configs.
# Only the Kubernetes and file service discoveries are compiled in (remove_all_sd), which
# keeps the cold build to a few minutes; the web UI assets are left out (the HTTP API,
# which tests and `make up` use, is complete).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/prometheus"
version=$(awk '$1 == "github.com/prometheus/prometheus" {print $2} $2 == "github.com/prometheus/prometheus" {print $3}' "$mod/go.mod" | head -1)
recipe_hash=$(cat "$here/install-prometheus.sh" "$mod/go.mod" "$mod/go.sum" 2>/dev/null | sha256sum | cut -c1-12)
cache_root=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}
bin="$cache_root/prometheus-${version}-${recipe_hash}/bin"
log="$cache_root/build-prometheus.log"
mkdir -p "$cache_root"

if [[ -x "$bin/prometheus" ]]; then
  echo "$bin/prometheus"
  exit 0
fi
exec 9>"$cache_root/build-prometheus.lock"
if ! flock -n 9; then
  echo "[build-prometheus] another build is running; waiting for it" >&2
  flock 9
fi
if [[ -x "$bin/prometheus" ]]; then
  echo "$bin/prometheus"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-prometheus: Go is needed to build Prometheus (the same Go as hack/build-k8s.sh)" >&2
  exit 1
fi
start=$(date +%s)
step() { printf '[build-prometheus +%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
tmp="$bin.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
: > "$log"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
step "compiling Prometheus ${version} (kubernetes + file service discovery; a cold build takes a few minutes)"
if ! (cd "$mod" && go build -trimpath -tags "remove_all_sd,enable_kubernetes_sd,enable_file_sd" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
      -o "$tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus) >>"$log" 2>&1; then
  step "FAILED: go build prometheus. Log: $log"
  tail -n 30 "$log" >&2 || true
  exit 1
fi
rm -rf "$bin"; mv "$tmp" "$bin"
step "done: $bin/prometheus"
echo "$bin/prometheus"
