#!/usr/bin/env bash
# Builds (or reuses) helm and the chart security linter (kube-score) from Go modules
# into a cache outside the repository, keyed by the pinned versions and a hash of this
# recipe, like hack/build-k8s.sh. Prints the bin directory last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/helm-versions.env"
recipe_hash=$(cat "$here/helm-versions.env" "$here/build-helm.sh" | sha256sum | cut -c1-12)
cache_root=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}
bin="$cache_root/helm-${HELM_VERSION}-kube-score-${KUBE_SCORE_VERSION}-${recipe_hash}/bin"
log="$cache_root/build-helm.log"
mkdir -p "$cache_root"

done_already() { [[ -x "$bin/helm" && -x "$bin/kube-score" ]]; }
if done_already; then echo "$bin"; exit 0; fi
# One build at a time (make test and make up may race); re-check once we hold the lock.
exec 9>"$cache_root/build-helm.lock"
if ! flock -n 9; then
  echo "[build-helm] another build is running; waiting for it" >&2
  flock 9
fi
if done_already; then echo "$bin"; exit 0; fi

start=$(date +%s)
step() { printf '[build-helm +%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
fail() {
  step "FAILED at step: $1. Log: $log"
  tail -n 30 "$log" >&2 || true
  echo "Retry with: bash hack/build-helm.sh (downloads and compiled packages are kept; it resumes)" >&2
  exit 1
}
( while sleep 60; do step "still building (a cold build takes 5-20 min on 2 cores)" 2>/dev/null || true; done ) 2>&1 >&2 &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT

tmp="$bin.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
: > "$log"

# The Kubernetes version helm assumes for `helm template`/`lint` capabilities: the
# control plane's (hack/versions.env).
KUBE_VERSION=$(sed -n 's/^KUBE_VERSION=//p' "$here/versions.env")
kminor=${KUBE_VERSION#v1.}; kminor=${kminor%%.*}
h=helm.sh/helm/v3
ldflags="-s -w -X $h/internal/version.version=${HELM_VERSION} -X $h/internal/version.gitTreeState=clean"
for pkg in $h/pkg/lint/rules $h/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${kminor}"
done
step "compiling helm ${HELM_VERSION} (downloads its Go modules first)"
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$h/cmd/helm@${HELM_VERSION}" >>"$log" 2>&1 || fail "go install helm"
step "compiling kube-score ${KUBE_SCORE_VERSION}"
GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION}" "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}" >>"$log" 2>&1 || fail "go install kube-score"
rm -rf "$bin"; mv "$tmp" "$bin"
step "done: $bin ($(du -sh "$bin" | cut -f1))"
echo "$bin"
