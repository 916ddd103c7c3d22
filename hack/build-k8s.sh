#!/usr/bin/env bash
# Builds (or reuses) the local control plane binaries:
#   berth-k8s  (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
#               kubelet, kube-proxy)
#   kwok       (fake nodes)
# into a cache outside the repository, keyed by the pinned versions and a hash of this
# recipe, so a second run starts without compiling. Prints the bin directory last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
recipe_hash=$(cat "$here/versions.env" "$here/build-k8s.sh" "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/k8s/main.go" | sha256sum | cut -c1-12)
cache_root=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}
bin="$cache_root/k8s-${KUBE_VERSION}-kwok-${KWOK_VERSION}-${recipe_hash}/bin"
log="$cache_root/build-k8s.log"
mkdir -p "$cache_root"

if [[ -x "$bin/berth-k8s" && -x "$bin/kwok" ]]; then
  echo "$bin"
  exit 0
fi
# One build at a time (make test and make up may race); re-check once we hold the lock.
exec 9>"$cache_root/build-k8s.lock"
if ! flock -n 9; then
  echo "[build-k8s] another build is running; waiting for it" >&2
  flock 9
fi
if [[ -x "$bin/berth-k8s" && -x "$bin/kwok" ]]; then
  echo "$bin"
  exit 0
fi

start=$(date +%s)
step() { printf '[build-k8s +%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
fail() {
  step "FAILED at step: $1. Log: $log"
  tail -n 30 "$log" >&2 || true
  echo "Retry with: bash hack/build-k8s.sh (downloads and compiled packages are kept; it resumes)" >&2
  exit 1
}
# A heartbeat so a long first build shows it is alive.
( while sleep 60; do step "still building (a cold build takes 10-30 min on 2 cores)" 2>/dev/null || true; done ) 2>&1 >&2 &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT

tmp="$bin.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
: > "$log"

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step "downloading Go modules for Kubernetes ${KUBE_VERSION}"
(cd "$here/k8s" && go mod download) >>"$log" 2>&1 || fail "go mod download (k8s)"
step "compiling berth-k8s (apiserver, controller-manager, scheduler, kubectl, etcd, kubelet, kube-proxy)"
(cd "$here/k8s" && go build -trimpath -ldflags "$ldflags" -o "$tmp/berth-k8s" .) >>"$log" 2>&1 || fail "go build berth-k8s"
step "compiling kwok ${KWOK_VERSION}"
GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" >>"$log" 2>&1 || fail "go install kwok"
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do ln -sf berth-k8s "$tmp/$c"; done
rm -rf "$bin"; mv "$tmp" "$bin"
step "done: $bin ($(du -sh "$bin" | cut -f1))"
echo "$bin"
