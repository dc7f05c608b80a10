#!/usr/bin/env bash
# Install a consul binary into a cache folder without touching the system's apt configuration.
# Debian 12 has no consul package; Debian 11 (bullseye) ships consul 1.8.7 as a static binary.
# It downloads from the Debian mirrors the system's apt sources name (one-line *.list and deb822 *.sources
# under $APT_ETC, default /etc/apt), so a local mirror or caching proxy works; else from deb.debian.org.
# The same rules as consul_agents/dev.py's install_consul.
# Usage: scripts/install-consul.sh [DEST_DIR]   (prints the path of the binary)
set -euo pipefail
dest="${1:-${CONSUL_AGENTS_CACHE:-$HOME/.cache/consul-agents}/bin}"
etc="${APT_ETC:-/etc/apt}"
if [ -x "$dest/consul" ]; then echo "$dest/consul"; exit 0; fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

debian_mirrors() {
  {
    cat "$etc/sources.list" "$etc"/sources.list.d/*.list 2>/dev/null |
      sed -E 's/#.*//' | awk '$1 == "deb" { sub(/\[[^]]*\]/, ""); print $2 }'
    for file in "$etc"/sources.list.d/*.sources; do
      [ -f "$file" ] || continue
      # deb822: paragraphs with Types (must include deb), URIs (may continue on indented lines), Enabled.
      awk 'BEGIN { RS = "" } {
        types = ""; enabled = "yes"; uris = ""; key = ""
        n = split($0, lines, "\n")
        for (i = 1; i <= n; i++) {
          line = lines[i]
          if (line ~ /^#/) continue
          if (line ~ /^[ \t]/) { if (key == "uris") uris = uris " " line; continue }
          key = tolower(line); sub(/:.*/, "", key); value = line; sub(/^[^:]*:/, "", value)
          if (key == "types") types = value
          else if (key == "enabled") { enabled = tolower(value); gsub(/[ \t]/, "", enabled) }
          else if (key == "uris") uris = value
        }
        if ((" " types " ") ~ /[ \t]deb[ \t]/ && enabled != "no" && enabled != "false") {
          m = split(uris, list, /[ \t]+/); for (j = 1; j <= m; j++) if (list[j] != "") print list[j]
        }
      }' "$file"
    done
  } | sed -E 's:/+$::' | grep -E '^https?://.*/debian(/[0-9]{8}T[0-9]{6}Z)?$' | awk '!seen[$0]++' || true
}

mirrors=$(debian_mirrors)
[ -n "$mirrors" ] || mirrors=http://deb.debian.org/debian
failures=""
for mirror in $mirrors; do
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/extract"
  echo "deb [signed-by=$keyring] $mirror bullseye main" > "$work/sources.list"
  opts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
        -oDir::State::Lists="$work/lists" -oDir::Cache::Archives="$work/archives"
        -oDir::Cache="$work" -oDebug::NoLocking=1 -qq)
  if [ "$(id -u)" -eq 0 ]; then opts+=(-oAPT::Sandbox::User=root); fi  # _apt cannot write into our temp dir
  said=$(apt-get "${opts[@]}" update 2>&1) || true
  if ! ls "$work"/lists/*_Packages* >/dev/null 2>&1; then
    failures+="- $mirror: apt-get update fetched nothing: ${said:-no package lists}"$'\n'
  elif ! said=$(cd "$work" && apt-get "${opts[@]}" download consul 2>&1); then
    failures+="- $mirror: apt-get download consul failed: $said"$'\n'
  else
    mkdir -p "$dest"
    dpkg-deb -x "$work"/consul_*.deb "$work/extract"
    install -m 0755 "$work/extract/usr/bin/consul" "$dest/consul"
    rm -rf "$work"
    echo "$dest/consul"
    exit 0
  fi
  rm -rf "$work"
done
{
  echo "error: installing consul failed from every Debian mirror tried (from $etc):"
  printf '%s' "$failures"
  echo "Check that this machine reaches that mirror (apt's proxy settings apply), or install Consul yourself and set CONSUL_BIN to its path."
} >&2
exit 1
