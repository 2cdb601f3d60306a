#!/usr/bin/env bash
# Checks packaging/agent-sync.service with systemd-analyze, offline (no running systemd
# needed; Debian: apt-get install systemd): `verify` must print nothing, and `security`
# must rate the exposure 4.9 or less. The unit is checked in a scratch root holding the
# system's units and the binary at its ExecStart path.
#   packaging/check-unit.sh [BINARY]   (default: target/release/agent-sync)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/agent-sync}
[[ -x "$bin" ]] || { echo "error: $bin is missing (build it first)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/etc/default"
cp -a "$(realpath /usr/lib/systemd/system)" "$root/usr/lib/systemd/system"
cp "$bin" "$root/usr/bin/agent-sync"
cp packaging/agent-sync.service "$root/usr/lib/systemd/system/"
cp packaging/agent-sync.default "$root/etc/default/agent-sync"

verify=$(systemd-analyze verify --man=no --root="$root" /usr/lib/systemd/system/agent-sync.service 2>&1) || {
  echo "$verify"; echo "error: systemd-analyze verify failed" >&2; exit 1; }
[[ -z "$verify" ]] || { echo "$verify"; echo "error: systemd-analyze verify warned" >&2; exit 1; }
echo "systemd-analyze verify: ok"

score=$(systemd-analyze security --offline=true --no-pager --root="$root" agent-sync.service |
  grep 'Overall exposure level')
echo "$score"
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) exit !($i <= 4.9); exit 1 }' <<<"$score" || {
  echo "error: exposure above 4.9" >&2; exit 1; }
