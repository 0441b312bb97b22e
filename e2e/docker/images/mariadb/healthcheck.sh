#!/bin/bash
# The official mariadb image's healthcheck.sh, for the one test the e2e's
# compose file uses: --connect (the server accepts a TCP connection and
# speaks the protocol; an access-denied answer counts, as mariadb-admin ping
# says).
set -u
[ $# -gt 0 ] || set -- --connect
for t in "$@"; do
	case "$t" in
	--connect)
		mariadb-admin --no-defaults --protocol=tcp -h 127.0.0.1 -P 3306 --connect-timeout=2 ping >/dev/null 2>&1 || exit 1
		;;
	*)
		echo "healthcheck.sh: $t is not supported by this stand-in image (only --connect)" >&2
		exit 1
		;;
	esac
done
