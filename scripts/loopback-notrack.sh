#!/usr/bin/env bash
# Keep loopback traffic out of netfilter's connection tracking.
#
# Where a Docker engine runs, nf_conntrack tracks every connection, also
# on loopback. haconfd's tests open 100,000+ short loopback connections
# (client churn through HAProxy); their TIME_WAIT entries fill the
# conntrack table (262,144 entries) and the kernel then drops new SYNs
# ("nf_conntrack: table full, dropping packet"): connections time out and
# HAProxy looks broken when it is not. Docker never NATs loopback traffic
# (a port published on 127.0.0.1 goes through docker-proxy), so loopback
# needs no tracking. Idempotent; needs root (CI is root). Without root it
# only says what it would do.
set -euo pipefail
if ! command -v iptables >/dev/null 2>&1; then
	exit 0 # no netfilter tools: nothing tracks loopback here
fi
if [ "$(id -u)" != 0 ]; then
	if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
		echo "loopback-notrack: not root; if tests time out on loopback, run as root: $0" >&2
	fi
	exit 0
fi
iptables -t raw -C PREROUTING -i lo -j NOTRACK 2>/dev/null || iptables -t raw -I PREROUTING -i lo -j NOTRACK
iptables -t raw -C OUTPUT -o lo -j NOTRACK 2>/dev/null || iptables -t raw -I OUTPUT -o lo -j NOTRACK
