#!/bin/sh
# Install Debian's Prometheus server and promtool for the integration tests.
#
# Idempotent: does nothing when promtool is already on PATH. Runs as root with no
# prompt. The package's post-install step may try to start a system service; on a
# machine without a running init system that fails harmlessly, so it is tolerated.
set -eu

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "prometheus already installed: $(command -v prometheus)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the package from trying to start its service in containers and CI sandboxes.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus || {
    # A failed service start in post-install leaves the package half-configured;
    # finish configuring it, which succeeds once the binaries are in place.
    dpkg --configure -a || true
}

command -v prometheus >/dev/null 2>&1 || { echo "prometheus binary missing after install" >&2; exit 1; }
command -v promtool >/dev/null 2>&1 || { echo "promtool binary missing after install" >&2; exit 1; }
prometheus --version 2>&1 | head -n 1
