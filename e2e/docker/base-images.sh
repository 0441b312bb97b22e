#!/usr/bin/env bash
# Makes, without a container registry, the images the repository's
# Dockerfile starts FROM, under the names it uses:
#
#   debian:${DEBIAN_RELEASE}-slim       a minimal Debian root (debootstrap
#                                       --variant=minbase, slimmed like the
#                                       official image), docker import-ed
#   golang:${GO_VERSION}-${DEBIAN_RELEASE}
#                                       the same root plus ca-certificates,
#                                       git and this machine's Go toolchain;
#                                       it trusts the certificates this
#                                       machine trusts (its CA bundle), so
#                                       that `go mod download` reaches the
#                                       module proxy the way the machine
#                                       does, through a TLS-inspecting
#                                       egress proxy too
#
# The names come from the Dockerfile's ARG and FROM lines, so the Dockerfile
# stays the one a user with a registry builds unchanged. The root is cached
# in $HACONFD_E2E_CACHE (default /var/cache/haconfd-e2e) and made again
# when missing; an image is made again when the root or the toolchain it was
# made from changed. An image of one of these names that this script did not
# make (pulled from a registry) is left alone.
#
# Needs root (debootstrap), debootstrap, a Docker engine, Go at
# $(go env GOROOT) of the Dockerfile's GO_VERSION, and a Debian mirror
# ($DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0 # the classic builder: no frontend image to pull

cache=${HACONFD_E2E_CACHE:-/var/cache/haconfd-e2e}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
label=org.haconfd.e2e.made-from

die() { echo "base-images: $*" >&2; exit 2; }
log() { printf '%s base-images: %s\n' "$(date +%H:%M:%S)" "$*"; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap makes device nodes and chroots)"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || die "debootstrap not found: apt-get install debootstrap"
export PATH="$PATH:/usr/sbin:/sbin"

go_version=$(sed -n 's/^ARG GO_VERSION=//p' Dockerfile)
release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' Dockerfile)
[ -n "$go_version" ] && [ -n "$release" ] || die "Dockerfile: no ARG GO_VERSION=... or ARG DEBIAN_RELEASE=..."
slim="debian:${release}-slim"
builder="golang:${go_version}-${release}"

# Every FROM of the Dockerfile (other than an earlier stage) must be one of
# the two images made here.
while read -r from; do
	from=${from//\$\{GO_VERSION\}/$go_version}
	from=${from//\$\{DEBIAN_RELEASE\}/$release}
	case "$from" in
	"$slim" | "$builder") ;;
	*) die "Dockerfile: FROM $from is not made by this script (only $slim and $builder)" ;;
	esac
done < <(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile)

gobin=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$gobin" ] || die "go not found (the builder image copies this machine's toolchain)"
goroot=$("$gobin" env GOROOT)
have_go=$("$gobin" env GOVERSION)
case "$have_go." in
"go$go_version".*) ;;
*) die "this machine has $have_go, the Dockerfile builds with Go $go_version (ARG GO_VERSION)" ;;
esac

# made_by_us IMAGE STAMP: 0 when IMAGE exists and was made here from STAMP,
# 1 when it is missing or made here from something else, 2 when it exists
# but was not made here.
made_by_us() {
	local got
	got=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null) || return 1
	case "$got" in
	"$2") return 0 ;;
	"" | "<no value>") return 2 ;;
	*) return 1 ;;
	esac
}

# ---- the root ----
root="$cache/$release-minbase"
if [ ! -f "$root.stamp" ] || [ ! -d "$root" ]; then
	log "debootstrap $release (minbase) from $mirror into $root"
	t0=$SECONDS
	mkdir -p "$cache"
	rm -rf "$root" "$root.tmp" "$root.stamp"
	debootstrap --variant=minbase --components=main "$release" "$root.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
	# As the official -slim image: no docs, man pages or translations
	# installed later either, apt's caches cleaned after each install.
	cat >"$root.tmp/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
	cat >"$root.tmp/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
	rm -f "$root.tmp/etc/apt/sources.list"
	cat >"$root.tmp/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $mirror
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
	find "$root.tmp/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	rm -rf "$root.tmp"/usr/share/man/* "$root.tmp"/usr/share/info/* "$root.tmp"/var/cache/apt/*.bin \
		"$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/* "$root.tmp"/var/log/* \
		"$root.tmp"/etc/resolv.conf "$root.tmp"/etc/hostname
	find "$root.tmp/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	mv "$root.tmp" "$root"
	echo "$release-minbase $(date -u +%Y%m%dT%H%M%SZ)" >"$root.stamp"
	log "root ready in $((SECONDS - t0))s ($(du -sh "$root" | cut -f1))"
fi
stamp=$(cat "$root.stamp")

# ---- debian:<release>-slim ----
rc=0
made_by_us "$slim" "$stamp" || rc=$?
case $rc in
0) log "$slim is up to date" ;;
2) log "$slim exists and was not made here: left alone" ;;
*)
	log "docker import $root as $slim"
	t0=$SECONDS
	old=$(docker image inspect -f '{{.Id}}' "$slim" 2>/dev/null || true)
	tar -C "$root" --numeric-owner -c . | docker import \
		--change "LABEL $label=\"$stamp\"" \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' \
		- "$slim" >/dev/null
	# The image it replaces, once nothing is built on it any more.
	[ -z "$old" ] || docker rmi "$old" >/dev/null 2>&1 || true
	log "$slim imported in $((SECONDS - t0))s"
	;;
esac

# ---- golang:<version>-<release> ----
cabundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$cabundle" ] || die "$cabundle: no CA bundle to give the builder image (apt-get install ca-certificates)"
gostamp="$stamp $have_go ca:$(sha256sum <"$cabundle" | cut -c1-12)"
rc=0
made_by_us "$builder" "$gostamp" || rc=$?
case $rc in
0) log "$builder is up to date" ;;
2) log "$builder exists and was not made here: left alone" ;;
*)
	log "building $builder: $slim + ca-certificates, git + $goroot ($have_go)"
	t0=$SECONDS
	old=$(docker image inspect -f '{{.Id}}' "$builder" 2>/dev/null || true)
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	cat >"$ctx/Dockerfile" <<CFG
FROM $slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates git \\
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY go /usr/local/go
ENV GOLANG_VERSION=${have_go#go} GOTOOLCHAIN=local GOPATH=/go \\
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go && go version
WORKDIR /go
LABEL $label="$gostamp"
CFG
	cp "$cabundle" "$ctx/ca-certificates.crt"
	# The context is a tar stream: the Dockerfile, the CA bundle and the
	# toolchain.
	tar -c -C "$ctx" Dockerfile ca-certificates.crt -C "$(dirname "$goroot")" --transform "s,^$(basename "$goroot"),go," "$(basename "$goroot")" |
		docker build --network host -q -t "$builder" - >/dev/null
	[ -z "$old" ] || docker rmi "$old" >/dev/null 2>&1 || true
	log "$builder built in $((SECONDS - t0))s"
	;;
esac
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^($slim|$builder) " | sed 's/^/  /'
