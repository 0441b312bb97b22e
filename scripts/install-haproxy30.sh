#!/usr/bin/env bash
# Installs HAProxy 3.0 LTS (Debian 13 "trixie"'s package) into a folder of
# this repository, next to the machine's own HAProxy, for the tests that
# run against both versions. Prints the path of the binary on stdout (and
# nothing else there); progress goes to stderr.
#
#   scripts/install-haproxy30.sh            # -> .cache/haproxy-3.0/bin/haproxy
#   HACONFD_HAPROXY30_DIR=/opt/hc30 scripts/install-haproxy30.sh
#   scripts/install-haproxy30.sh --force    # download and install again
#
# How: Debian 13's haproxy needs a newer glibc than Debian 12's, so the
# package and the libraries it loads are extracted into one folder and the
# copy of the binary is patched (patchelf) to use that folder's dynamic
# loader and libraries. apt runs with a private sources list, list and
# cache folders inside the install folder: the machine's apt configuration
# is not changed (no trixie suite, no pin), so nothing else on the machine
# can be upgraded by it, and root is not needed.
#
# Idempotent: when the folder already holds a working 3.0 binary it only
# prints the path. Needs: Debian or a derivative (apt-get, dpkg-deb), x86_64,
# network access to the Debian mirror (HACONFD_DEBIAN_MIRROR, default
# http://deb.debian.org/debian; security updates from
# HACONFD_DEBIAN_SECURITY_MIRROR, default http://deb.debian.org/debian-security).
set -euo pipefail

die() { echo "install-haproxy30: $*" >&2; exit 1; }
say() { echo "install-haproxy30: $*" >&2; }

force=false
case "${1-}" in
	"") ;;
	--force) force=true ;;
	*) echo "install-haproxy30: unknown argument ${1} (only --force)" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${HACONFD_HAPROXY30_DIR:-$repo/.cache/haproxy-3.0}
case "$dir" in
	/*) ;;
	*) dir=$PWD/$dir ;;
esac
mirror=${HACONFD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${HACONFD_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
bin=$dir/bin/haproxy
stamp=$dir/installed

# works: the binary starts, loads its libraries and says it is 3.0.
works() {
	local out
	out=$("$bin" -v 2>&1) || return 1
	case "$out" in
		"HAProxy version 3.0."*) return 0 ;;
	esac
	return 1
}

if ! $force && [ -f "$stamp" ] && [ -x "$bin" ] && works; then
	echo "$bin"
	exit 0
fi

# One install at a time (make test and make e2e-galera30 may both call it).
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
command -v flock >/dev/null 2>&1 && flock 9
if ! $force && [ -f "$stamp" ] && [ -x "$bin" ] && works; then
	echo "$bin"
	exit 0
fi
# Never delete a folder this script did not make.
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/apt/sources.list" ]; then
	die "$dir exists and was not made by this script: remove it or choose another HACONFD_HAPROXY30_DIR"
fi

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (this machine is $(uname -m))"
for tool in apt-get dpkg-deb; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs Debian or a derivative"
done
[ -r "$keyring" ] || die "$keyring not found: install the debian-archive-keyring package"

say "installing Debian 13's haproxy into $dir"
rm -rf "$dir"
root=$dir/root
apt=$dir/apt
mkdir -p "$root" "$dir/bin" "$dir/debs" "$apt/lists/partial" "$apt/cache/archives/partial" \
	"$apt/sources.list.d" "$apt/preferences.d"
: >"$apt/status"
cat >"$apt/sources.list" <<SOURCES
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror trixie-updates main
deb [signed-by=$keyring] $security trixie-security main
SOURCES
aptopts=(
	-o "Dir::Etc::SourceList=$apt/sources.list"
	-o "Dir::Etc::SourceParts=$apt/sources.list.d"
	-o "Dir::Etc::Preferences=$apt/preferences"
	-o "Dir::Etc::PreferencesParts=$apt/preferences.d"
	-o "Dir::State::Lists=$apt/lists"
	-o "Dir::State::status=$apt/status"
	-o "Dir::Cache=$apt/cache"
	-o "APT::Sandbox::User=$(id -un)"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures=amd64"
)
apt-get "${aptopts[@]}" -q --error-on=any update >&2 || die "apt-get update of the trixie lists failed (mirror $mirror)"

# haproxy, the libraries it loads (and theirs, newer than Debian 12's),
# and patchelf, run with those same libraries.
pkgs=(haproxy libc6 libcrypt1 libjemalloc2 liblua5.4-0 libopentracing-c-wrapper0t64 libopentracing1
	libpcre2-8-0 libssl3t64 libstdc++6 libgcc-s1 libzstd1 zlib1g patchelf)
(cd "$dir/debs" && apt-get "${aptopts[@]}" -q download "${pkgs[@]}" >&2) || die "apt-get download ${pkgs[*]} failed"
for deb in "$dir"/debs/*.deb; do
	dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
done

lib=$root/usr/lib/x86_64-linux-gnu
loader=$lib/ld-linux-x86-64.so.2
[ -e "$loader" ] || die "no dynamic loader at $loader after extracting libc6"
[ -x "$root/usr/sbin/haproxy" ] || die "no usr/sbin/haproxy in the haproxy package"
cp "$root/usr/sbin/haproxy" "$bin.new"
# --force-rpath writes DT_RPATH, which also applies to the libraries'
# own dependencies (DT_RUNPATH would not: libssl would then load the
# machine's older glibc and fail with "GLIBC_2.38 not found").
"$loader" --library-path "$lib" "$root/usr/bin/patchelf" \
	--set-interpreter "$loader" --force-rpath --set-rpath "$lib" "$bin.new" ||
	die "patchelf on $bin.new failed"
mv "$bin.new" "$bin"
works || die "$bin does not run as HAProxy 3.0: $("$bin" -v 2>&1 || true)"
version=$(dpkg-deb -f "$dir"/debs/haproxy_*.deb Version)
rm -rf "$dir/debs" "$apt/cache" "$apt/lists"
say "installed Debian 13's package haproxy $version"
echo "haproxy $version (Debian 13), installed $(date -u +%FT%TZ)" >"$stamp"
echo "$bin"
