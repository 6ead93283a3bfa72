#!/bin/sh
# Finishes the agent image. Runs as the last Dockerfile step on both build paths:
# on debian:bookworm-slim it installs the packages, on the offline rootfs (made by
# debootstrap with the same list) they are already present and apt-get is skipped.
set -eu
packages=$(grep -v '^#' /tmp/harness-image/packages.txt | tr '\n' ' ')
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
# The agent's uid is fixed so the harness can give it the workspace on the host.
id agent >/dev/null 2>&1 || useradd --uid 1000 --user-group --create-home --shell /bin/bash agent
mkdir -p /workspace
chown agent:agent /workspace
git config --system --add safe.directory /workspace
git config --system user.name "harness agent"
git config --system user.email "agent@harness.invalid"
git config --system init.defaultBranch main
rm -rf /tmp/harness-image
