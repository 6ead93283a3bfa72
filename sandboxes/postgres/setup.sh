#!/bin/sh
# Finishes the database server image on both build paths (see ../agent/setup.sh).
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
# A fixed uid, so the harness can hand the socket folder on the host to the server.
# (Newer suites give 999 to a system group or user of their own: move it aside.)
other=$(getent group 999 | cut -d: -f1)
[ -n "$other" ] && [ "$other" != postgres ] && groupmod -g 1999 "$other"
other=$(getent passwd 999 | cut -d: -f1)
[ -n "$other" ] && [ "$other" != postgres ] && usermod -u 1999 "$other"
groupmod -g 999 postgres
usermod -u 999 -g 999 postgres
mkdir -p /var/lib/postgresql/data /var/run/postgresql
chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql /etc/postgresql 2>/dev/null || true
install -m 0755 /tmp/harness-image/entrypoint.sh /usr/local/bin/harness-postgres
rm -rf /tmp/harness-image
