#!/usr/bin/env bash
# The Dockerfile's runtime root file systems: run inside a debian:bookworm-slim stage.
#   image-root.sh TAG[,TAG...]   install the packages.txt packages tagged so (install-deps.sh --only),
#                                leave out what a runtime never reads (documentation, manuals,
#                                translations, apt's lists), add the user and the writable folders
# Docker Hub's bookworm-slim leaves the same paths out (its dpkg path-exclude); the base made here by
# debootstrap keeps them, so the Dockerfile copies this stage's tree into one layer FROM scratch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# == 1 ]] || { echo "usage: $0 TAG[,TAG...]" >&2; exit 2; }

cat > /etc/dpkg/dpkg.cfg.d/loupe-slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
"$here/install-deps.sh" --only "$1"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/log/alternatives.log /var/cache/debconf/*-old
# What the base already had of the excluded paths.
find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian/*

# uid/gid 10001, numeric in the image's USER so that Kubernetes' runAsNonRoot can check it.
groupadd --system --gid 10001 loupe
useradd --system --uid 10001 --gid loupe --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin loupe
# The only folders the daemon writes (with /tmp): the root file system may be read-only.
mkdir -p /models /reports
chown loupe:loupe /models /reports
