#!/usr/bin/env bash
# The chaos soak (make chaos): a 3-member etcd cluster, three haconfd +
# HAProxy load balancers (one --supervise, one in a network namespace that
# faults cut off from etcd), 8 registered backends and a client load, under
# random faults chosen by a seed; haconfd's promises are checked all the
# time (e2e/chaos/main.go). Needs root; installs Debian's iproute2,
# iptables, etcd-server and haproxy when missing.
#
#   e2e/chaos/run.sh [-seed N] [-duration 10m] [-faults 3,7] [-keep] [-haproxy PATH]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"

if [ "$(id -u)" != 0 ]; then
	echo "chaos: run as root (network namespaces, veth, iptables)" >&2
	exit 2
fi

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
	echo "chaos: installing ${need[*]}"
	# Keep the packaged services from starting: the soak runs its own.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
	[ -z "$made_policy" ] || rm -f "$policy"
fi
scripts/loopback-notrack.sh

# The program removes what it made; this trap does it too when the
# program could not (killed, crashed): namespace hcc-<sfx>, links hcc<sfx>e/d.
sfx=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
cleanup() {
	if ip netns list 2>/dev/null | grep -q "^hcc-$sfx\b"; then
		for pid in $(ip netns pids "hcc-$sfx" 2>/dev/null || true); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "hcc-$sfx" 2>/dev/null || true
	fi
	for l in "hcc${sfx}e" "hcc${sfx}d"; do
		ip link del "$l" 2>/dev/null || true
		iptables -t raw -D PREROUTING -i "$l" -j NOTRACK 2>/dev/null || true
		iptables -t raw -D OUTPUT -o "$l" -j NOTRACK 2>/dev/null || true
	done
}
trap cleanup EXIT

mkdir -p bin
go build -o bin/haconfd ./cmd/haconfd
go build -o bin/e2e-chaos ./e2e/chaos
bin/e2e-chaos -haconfd bin/haconfd -suffix "$sfx" "$@"
