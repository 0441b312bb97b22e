#!/usr/bin/env bash
# The container end-to-end test (make e2e-docker): builds the image from the
# repository's Dockerfile on a machine with a Docker engine and no registry
# (base-images.sh makes the images it starts FROM) and runs it for real:
# supervise mode, the sidecar example and the compose example with three
# MariaDB Galera nodes (e2e/docker/main.go says what each checks).
#
# Needs root and a running Docker engine; installs Debian's debootstrap and
# docker-compose when missing. One run at a time per machine (a lock).
# Everything it creates carries the label org.haconfd.e2e and is removed
# at the end, also when it fails or is interrupted. Arguments go to
# main.go (-only images,supervise,sidecar,compose; -work DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"

die() { echo "e2e-docker: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, and the Docker engine's socket)"
command -v docker >/dev/null 2>&1 || die "no docker command: this test needs a Docker engine (Debian: apt-get install docker.io, then start dockerd)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info): start it first"

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
	echo "e2e-docker: installing ${need[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

exec 9>/run/lock/haconfd-e2e-docker.lock
flock -w 1800 9 || die "another e2e-docker run holds /run/lock/haconfd-e2e-docker.lock"

bin=$(mktemp -d)
sweep() {
	local ids
	ids=$(docker ps -aq --filter label=org.haconfd.e2e) && [ -z "$ids" ] || docker rm -f -v $ids >/dev/null 2>&1 || true
	ids=$(docker network ls -q --filter label=org.haconfd.e2e) && [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
	ids=$(docker volume ls -q --filter label=org.haconfd.e2e) && [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
	rm -rf "$bin"
}
# A backstop: main.go removes what it made; this catches a run killed hard.
trap sweep EXIT

go build -o "$bin/e2e-docker" ./e2e/docker
# A bound on the whole run: SIGINT lets it clean up, SIGKILL a minute later.
timeout -s INT -k 60 45m "$bin/e2e-docker" "$@"
