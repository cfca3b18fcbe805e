#!/usr/bin/env bash
# Install the Debian packages in scripts/packages.txt that are not installed yet.
# Idempotent: when everything is present it only checks, prints nothing and exits 0.
#   scripts/install-deps.sh                  every package of the list
#   scripts/install-deps.sh --only TAG,...   those whose comment carries [TAG] (the Dockerfile's stages)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list="$here/packages.txt"
if [[ ${1:-} == --only && -n ${2:-} ]]; then
  mapfile -t wanted < <(awk -v tags="$2" '
    BEGIN { n = split(tags, t, ",") }
    $1 !~ /^#/ { for (i = 1; i <= n; i++) if (index($0, "#") && index(substr($0, index($0, "#")), "[" t[i] "]")) { print $1; next } }' "$list")
  ((${#wanted[@]})) || { echo "install-deps: no package tagged ${2} in $list" >&2; exit 2; }
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--only TAG[,TAG...]]" >&2; exit 2
else
  mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$')
fi

missing=()
for p in "${wanted[@]}"; do
  # NodeSource's nodejs bundles npm (and conflicts with Debian's npm package).
  [[ $p == npm ]] && command -v npm >/dev/null && continue
  # A kubectl from another package (Kubernetes' own apt repository) is as good, and conflicts with it.
  [[ $p == kubernetes-client ]] && command -v kubectl >/dev/null && continue
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}" >&2
sudo=""
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to apt-get install" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
