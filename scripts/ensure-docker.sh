#!/bin/sh
# Make sure a Docker engine answers, and that the host tools orch's build and tests need are
# installed. Idempotent; returns at once when everything is already there. Runs as root on a
# fresh Debian 12 machine (CI) where only the docker client exists and there is no systemd.
set -eu

LOG=${ORCH_DOCKERD_LOG:-/var/log/orch-dockerd.log}
WAIT=${ORCH_DOCKERD_WAIT:-60}

say() { echo "ensure-docker: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Commands whose absence means a package is missing: "command:package". dockerd
# decompresses the store's gzip layers with unpigz when it is on PATH (Go's gzip otherwise,
# about half as fast). SLURM (with munge) and Podman (with catatonit for --init, and what
# rootless Podman needs, and the network stack it was measured with: netavark, not the CNI
# plugins apt would pick without recommends) are the other engine and scheduler the tests
# run on. A program outside PATH is named by its absolute path.
NEEDED="dockerd:docker.io debootstrap:debootstrap docker-registry:docker-registry ip:iproute2 git:git chromium:chromium unpigz:pigz
slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge
podman:podman catatonit:catatonit newuidmap:uidmap fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns
/usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns"

missing=""
for pair in $NEEDED; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if [ "${cmd#/}" != "$cmd" ]; then
        [ -x "$cmd" ] || missing="$missing $pkg"
    elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages:$missing (run as root, or install them)"
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install -y -q --no-install-recommends $missing >&2 || die "apt-get install failed:$missing"
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

# The default daemon may be starting already (a concurrent call): then only wait for it. Its
# pidfile tells, where "any dockerd process" would also match the tests' second daemon.
PIDFILE=/var/run/docker.pid
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
else
    [ "$(id -u)" -eq 0 ] || die "no Docker daemon answers and starting dockerd needs root"
    DOCKERD=$(command -v dockerd || echo /usr/sbin/dockerd)
    # The packaged containerd is started by dockerd itself when no systemd is around.
    say "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # setsid: the daemon outlives this script and the caller's process group (make, CI steps).
    setsid nohup "$DOCKERD" >>"$LOG" 2>&1 </dev/null &
fi

i=0
while ! docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt "$WAIT" ]; then
        say "last lines of $LOG:"
        tail -n 20 "$LOG" >&2 2>/dev/null || true
        die "no answer from 'docker info' within ${WAIT}s (DOCKER_HOST=${DOCKER_HOST:-default}; see $LOG)"
    fi
    sleep 1
done
say "docker daemon is up"
