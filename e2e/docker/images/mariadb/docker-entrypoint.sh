#!/bin/bash
# The official mariadb image's entrypoint, reduced to what the e2e's
# compose scenario uses: on the first start (empty datadir) create the
# system tables, the root password (for localhost and '%'), MARIADB_DATABASE
# and MARIADB_USER/MARIADB_PASSWORD with all privileges on it, with a
# temporary server that has no network and no wsrep; then run mariadbd as
# the mysql user (rsync and mariabackup SST need that) with the arguments.
set -euo pipefail

if [ "${1:0:1}" = "-" ]; then
	set -- mariadbd "$@"
fi
if [ "$1" != "mariadbd" ] && [ "$1" != "mysqld" ]; then
	exec "$@"
fi

datadir=/var/lib/mysql
sock=/run/mysqld/mysqld.sock
mkdir -p /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

log() { echo "$(date -u +%FT%TZ) [entrypoint] $*"; }
as_mysql() { setpriv --reuid=mysql --regid=mysql --init-groups "$@"; }
sql_escape() { printf '%s' "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/\\\\'/g"; }

if [ ! -d "$datadir/mysql" ]; then
	: "${MARIADB_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD is required}"
	log "initializing $datadir"
	as_mysql mariadb-install-db --datadir="$datadir" --auth-root-authentication-method=normal \
		--skip-test-db >/dev/null
	# setpriv execs mariadbd: $! is the server.
	setpriv --reuid=mysql --regid=mysql --init-groups mariadbd --skip-networking --wsrep-on=OFF --socket="$sock" --datadir="$datadir" \
		--skip-log-bin --innodb-buffer-pool-load-at-startup=0 &
	tmp=$!
	for _ in $(seq 60); do
		mariadb --protocol=socket -S "$sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
		kill -0 "$tmp" 2>/dev/null || { log "temporary server died"; exit 1; }
		sleep 0.5
	done
	rootpw=$(sql_escape "$MARIADB_ROOT_PASSWORD")
	{
		echo "SET sql_log_bin=0;"
		h=$(sql_escape "$(hostname)")
		echo "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', 'root'@'$h', ''@'localhost', ''@'$h';"
		echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('$rootpw');"
		echo "CREATE USER 'root'@'%' IDENTIFIED BY '$rootpw';"
		echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		if [ -n "${MARIADB_DATABASE:-}" ]; then
			echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"
		fi
		if [ -n "${MARIADB_USER:-}" ]; then
			echo "CREATE USER '$(sql_escape "$MARIADB_USER")'@'%' IDENTIFIED BY '$(sql_escape "${MARIADB_PASSWORD:-}")';"
			if [ -n "${MARIADB_DATABASE:-}" ]; then
				echo "GRANT ALL ON \`${MARIADB_DATABASE}\`.* TO '$(sql_escape "$MARIADB_USER")'@'%';"
			fi
		fi
		echo "FLUSH PRIVILEGES;"
	} | mariadb --protocol=socket -S "$sock" -uroot
	mariadb-admin --protocol=socket -S "$sock" -uroot -p"$MARIADB_ROOT_PASSWORD" shutdown
	wait "$tmp" || true
	log "initialized"
fi

log "exec $* (as mysql)"
exec setpriv --reuid=mysql --regid=mysql --init-groups "$@"
