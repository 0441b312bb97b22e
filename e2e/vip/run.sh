#!/usr/bin/env bash
# The virtual-IP end-to-end test (make e2e-vip): three load balancers as
# network namespaces, each with keepalived (examples/keepalived/), haconfd
# and HAProxy, a client on the virtual IP, and the failure scenarios of
# e2e/vip/main.go. Needs root; installs Debian's keepalived, iproute2,
# iptables and haproxy when missing. Extra arguments go to the program
# (-keep, -only WORDS, -haproxy PATH).
#
#   e2e/vip/run.sh --haproxy30 [args]   # against HAProxy 3.0 (Debian 13's)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ "$(id -u)" != 0 ]; then
	echo "e2e-vip: run as root (network namespaces, keepalived, iptables)" >&2
	exit 2
fi

need=()
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
	echo "e2e-vip: installing ${need[*]}"
	# Keep the packaged services from starting: the test runs its own.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
	[ -z "$made_policy" ] || rm -f "$policy"
fi

args=()
if [ "${1-}" = --haproxy30 ]; then
	shift
	args=(-haproxy "$(scripts/install-haproxy30.sh)")
fi

# The program removes what it made; this trap does it too when the
# program could not (killed, crashed): namespaces hcv-<sfx>-*, link hcv<sfx>r.
sfx=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
cleanup() {
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^hcv-$sfx-" || true); do
		for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
	ip link del "hcv${sfx}r" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p bin
go build -o bin/haconfd ./cmd/haconfd
go build -o bin/e2e-vip ./e2e/vip
bin/e2e-vip -haconfd bin/haconfd -suffix "$sfx" "${args[@]}" "$@"
