#!/usr/bin/env bash
# Builds the Debian package: the release binary, then the man pages and completions
# it generates (into target/deb-assets/, where [package.metadata.deb] assets point),
# then `cargo deb --no-build`. Prints the .deb's path last.
#   packaging/build-deb.sh [--no-build]   (--no-build: reuse target/release/agent-sync)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release --locked -p agent-sync --bin agent-sync
fi
bin=target/release/agent-sync
[[ -x "$bin" ]] || { echo "error: $bin is missing (build it first)" >&2; exit 1; }

out=target/deb-assets
rm -rf "$out"
mkdir -p "$out/man" "$out/completions" "$out/credential-home/.claude"

# agent-sync(1) and agent-sync-COMMAND(1) for every command the binary has (the
# binary lists them when asked for a page that does not exist).
"$bin" man | gzip -9n > "$out/man/agent-sync.1.gz"
commands=$({ "$bin" man no-such-page 2>&1 >/dev/null || true; } | sed -n 's/.*the man pages are: //p' | tr -d ',')
[[ -n "$commands" ]] || { echo "error: cannot list the commands for their man pages" >&2; exit 1; }
for c in $commands; do
  "$bin" man "$c" | gzip -9n > "$out/man/agent-sync-$c.1.gz"
done

"$bin" completions bash > "$out/completions/agent-sync"
"$bin" completions zsh > "$out/completions/_agent-sync"
"$bin" completions fish > "$out/completions/agent-sync.fish"

# The unit's LoadCredential= puts the token at /run/credentials/agent-sync.service/token;
# agent-sync reads $CORE_HOME/.claude/brain.key, so the package ships that as a link.
ln -s /run/credentials/agent-sync.service/token "$out/credential-home/.claude/brain.key"

cargo deb --no-build --locked -p agent-sync | tail -n 1
