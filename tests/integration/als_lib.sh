# Shared by the layer-store tests (sourced after lib.sh): podman with a root and runroot of
# its own under $PR, using the imgfs layer store at $STORE as its additional layer store.

# This host's hard limits, below podman's defaults.
RUN_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

pm() {
	podman --root "$PR/root" --runroot "$PR/run" --storage-driver overlay \
		--storage-opt "overlay.additionallayerstore=$STORE:ref" "$@"
}

# podman_leave DIR: what the podman whose storage is DIR left behind goes: its containers,
# its images and the overlay mounts under DIR/root (deferred before the store's umount, so
# that it runs first).
podman_leave() {
	local PR=$1

	pm rm -a -f -t 0 || true
	pm rmi -a -f || true
	umount -R "$PR/root/overlay" || true
}

# The store's use counts: one line per layer (REF LAYER COUNT).
layers_file() { cat "$IMGFS_ROOT"/mounts/*/layers; }
# A reference as the store's directory names it.
b64() { printf '%s' "$1" | base64 -w0; }
