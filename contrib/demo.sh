#!/bin/sh
# `make demo`: builds a small busybox image locally, serves it from a docker-registry on a
# loopback port, then pulls, mounts, runs a container on the mount, writes into the
# writable layer, unmounts, and runs the image in one step. Cleans up after itself.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TOP=$PWD
IMGFS="$TOP/$BUILD/imgfs"
RUNNER="$TOP/$BUILD/runner"

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (it mounts a FUSE filesystem and creates namespaces)" >&2
	exit 1
fi

work=$(mktemp -d /tmp/imgfs-demo.XXXXXX)
registry_pid=""
cleanup() {
	set +e
	mountpoint -q "$work/rootfs" 2>/dev/null && "$IMGFS" --root "$work/store" umount "$work/rootfs"
	[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -t 1 ]; then bold='\033[1m' plain='\033[0m'; else bold='' plain=''; fi
step() { printf "\n${bold}== %s${plain}\n" "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Building a busybox image locally (umoci, no internet)"
sh contrib/mkimage.sh busybox "$work/oci:latest" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<EOC
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
EOC
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
	curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
	sleep 0.1
done
image="127.0.0.1:$port/demo/busybox:latest"
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:latest" "docker://$image"
echo "serving $image from docker-registry on loopback"

export IMGFS_ROOT="$work/store"
step "imgfs pull: download, verify and index each layer in one pass"
show "$IMGFS" pull "$image"
show "$IMGFS" images

step "imgfs mount: the image as a rootfs, at once, without extracting it"
mkdir -p "$work/rootfs"
show "$IMGFS" mount "$image" "$work/rootfs"
show ls "$work/rootfs"

step "runner: a container on that directory"
show "$RUNNER" --hostname demo "$work/rootfs" /bin/sh -c \
	'echo "hostname: $(hostname)"; echo "processes (pid 1 is the runner'"'"'s init):"; ps -o pid,comm; echo "from the image: $(head -n 1 /etc/os-release)"; echo hello > /hello.txt; echo "wrote /hello.txt"'
echo "the write landed in the writable layer (overlayfs format, in the store):"
show cat "$work/rootfs/hello.txt"
show find "$IMGFS_ROOT/mounts" -name hello.txt

step "imgfs umount"
show "$IMGFS" umount "$work/rootfs"

step "imgfs run: pull + mount + run + unmount in one"
show "$IMGFS" run --hostname demo "$image" /bin/sh -c 'echo "hello from $(hostname), pid $$"'

step "Done: registry stopped, nothing left mounted"
