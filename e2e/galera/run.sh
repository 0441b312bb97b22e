#!/usr/bin/env bash
# End-to-end test of haconfd against a real Galera cluster (make e2e-galera).
# Installs Debian's mariadb-server, galera-4, rsync and haproxy when missing
# (needs root: mariadbd runs as the mysql user, which root starts), builds
# haconfd and runs e2e/galera/main.go, which starts and stops everything it
# needs and prints a summary. Extra arguments go to it (-keep, -workers N,
# -drain-bound D, -haproxy PATH).
#
#   e2e/galera/run.sh --haproxy30 [args]   # against HAProxy 3.0 (Debian 13's),
#                                          # installed by scripts/install-haproxy30.sh
# Without it, the HAProxy is $HACONFD_TEST_HAPROXY, else Debian 12's (2.6).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ "$(id -u)" != 0 ]; then
	echo "e2e-galera: run as root (it installs packages and starts mariadbd as the mysql user)" >&2
	exit 2
fi

need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server mariadb-client)
[ -e /usr/lib/galera/libgalera_smm.so ] || need+=(galera-4)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
	echo "e2e-galera: installing ${need[*]}"
	# Keep the packaged mariadb service from starting: this test runs its own.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
	[ -z "$made_policy" ] || rm -f "$policy"
fi

haproxy=()
if [ "${1-}" = --haproxy30 ]; then
	shift
	bin30=$(scripts/install-haproxy30.sh)
	haproxy=(-haproxy "$bin30")
fi

mkdir -p bin
go build -o bin/haconfd ./cmd/haconfd
exec go run ./e2e/galera -haconfd bin/haconfd "${haproxy[@]}" "$@"
