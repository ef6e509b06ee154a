#!/bin/sh
# Installs every build, test and bench dependency of imgfs from Debian's archive.
# Idempotent: does nothing (and needs no network) when everything is already there.
set -eu

PKGS="
build-essential pkg-config clang clang-format git
libfuse3-dev fuse3 libarchive-dev libcurl4-openssl-dev libcmocka-dev
libjansson-dev libssl-dev zlib1g-dev libisal-dev libzstd-dev libseccomp-dev
docker-registry skopeo umoci busybox-static runc bubblewrap fuse-overlayfs podman
archivemount hyperfine valgrind apache2-utils openssl python3 perl attr curl
debootstrap gnuplot-nox util-linux bsdutils time iproute2 procps psmisc zstd xz-utils jq
"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q </dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing </dev/null
# docker-registry's package starts a system service on port 5000; the tests run
# their own instances on free loopback ports and do not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker-registry 2>/dev/null; then
	systemctl stop docker-registry || true
fi
