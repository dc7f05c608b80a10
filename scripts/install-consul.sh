#!/usr/bin/env bash
# Install a consul binary into a cache folder without touching the system's apt configuration.
# Debian 12 has no consul package; Debian 11 (bullseye) ships consul 1.8.7 as a static binary.
# Usage: scripts/install-consul.sh [DEST_DIR]   (prints the path of the binary)
set -euo pipefail
dest="${1:-${CONSUL_AGENTS_CACHE:-$HOME/.cache/consul-agents}/bin}"
if [ -x "$dest/consul" ]; then echo "$dest/consul"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$dest"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main" > "$work/sources.list"
opts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
      -oDir::State::Lists="$work/lists" -oDir::Cache::Archives="$work/archives"
      -oDir::Cache="$work" -oDebug::NoLocking=1 -qq)
if [ "$(id -u)" -eq 0 ]; then opts+=(-oAPT::Sandbox::User=root); fi  # _apt cannot write into our temp dir
apt-get "${opts[@]}" update >&2
(cd "$work" && apt-get "${opts[@]}" download consul >&2)
dpkg-deb -x "$work"/consul_*.deb "$work/extract"
install -m 0755 "$work/extract/usr/bin/consul" "$dest/consul"
echo "$dest/consul"
