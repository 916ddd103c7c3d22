#!/usr/bin/env bash
# Builds (or reuses) versitygw, a real S3-compatible server over a POSIX directory, used by
# the runtime's s3:// source tests (tests/runtime/test_s3_source.py). Installed from the Go
# module proxy into a cache outside the repository, keyed by the pinned version and a hash
# of this recipe, so a second run starts at once. Prints the binary's path last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Pinned here, not in versions.env: that file keys the control plane's build cache.
VERSITYGW_VERSION=v1.8.0
recipe_hash=$(sha256sum < "$here/build-s3.sh" | cut -c1-12)
cache_root=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}
bin="$cache_root/versitygw-${VERSITYGW_VERSION}-${recipe_hash}/bin"
log="$cache_root/build-s3.log"
mkdir -p "$cache_root"

if [[ -x "$bin/versitygw" ]]; then
  echo "$bin/versitygw"
  exit 0
fi
exec 9>"$cache_root/build-s3.lock"
if ! flock -n 9; then
  echo "[build-s3] another build is running; waiting for it" >&2
  flock 9
fi
if [[ -x "$bin/versitygw" ]]; then
  echo "$bin/versitygw"
  exit 0
fi
echo "[build-s3] compiling versitygw ${VERSITYGW_VERSION} (first time: a few minutes)" >&2
tmp="$bin.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
if ! CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
    "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}" >"$log" 2>&1; then
  echo "[build-s3] FAILED; log: $log" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
fi
rm -rf "$bin"; mv "$tmp" "$bin"
echo "$bin/versitygw"
