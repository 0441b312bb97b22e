# syntax=docker/dockerfile:1
#
# haconfd + HAProxy in one image.
#
# Mode 1 (default): one container, haconfd runs HAProxy as its child in
# master-worker mode (run --supervise), restarts it if it dies and reloads it
# through the master CLI:
#
#   docker build -t haconfd/haconfd .
#   docker run -d --name haconfd -p 3306:3306 -p 9480:9480 haconfd/haconfd \
#       --etcd-endpoints http://10.0.0.11:2379
#
# Flags given to `docker run` come after "run --supervise
# --stop-haproxy-on-exit"; every setting can also be given as
# HACONFD_<FLAG> (-e) or in a --config file. `docker stop` soft-stops
# HAProxy (its listeners close, open connections get 5 s to finish) and
# exits 0 within Docker's default 10 s stop timeout.
#
# Mode 2: next to an existing HAProxy container (the official haproxy image,
# same major version), like two containers of one pod: they share
# /etc/haproxy and /run/haproxy (volumes), the network and PID namespaces
# and the user id. HAProxy runs in master-worker mode with
# -p /run/haproxy/haproxy.pid; haconfd runs without --supervise
# (--entrypoint overridden), writes the config, changes servers through the
# runtime socket and reloads the master with SIGUSR2 (--reload-cmd).
# examples/compose/haproxy-sidecar.yml and examples/kubernetes/ spell it out.
#
# `make e2e-docker` builds this image (on a machine without a registry, from
# base images e2e/docker/base-images.sh makes under the names below) and
# runs both modes and examples/compose/docker-compose.yml for real;
# e2e/examples_test.go checks that every COPY source exists, that the
# `go build` line is the Makefile's, and runs every example's haconfd
# command line, with this file's ENTRYPOINT and ENV, through
# `haconfd run --validate-config`.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# A static binary: no libc version coupling with the runtime image.
ENV CGO_ENABLED=0
# The same command as the Makefile's build target (checked by e2e/examples_test.go).
RUN go build -ldflags "-X main.version=${VERSION}" -o /out/haconfd ./cmd/haconfd

FROM debian:${DEBIAN_RELEASE}-slim
# tini: haconfd may be PID 1, and HAProxy's exiting workers must be reaped.
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/haproxy/haproxy.cfg \
    && groupadd --system --gid 10001 haconfd \
    && useradd --system --uid 10001 --gid haconfd --home-dir /var/lib/haconfd --shell /usr/sbin/nologin haconfd \
    && install -d -o haconfd -g haconfd -m 0755 /etc/haproxy /run/haproxy /var/lib/haconfd
COPY --from=build /out/haconfd /usr/local/bin/haconfd

# haconfd's defaults fit this image (output /etc/haproxy/haproxy.cfg, sockets
# in /run/haproxy, haproxy from PATH) except these two: an unprivileged user
# cannot write /run/haproxy.pid, and the health endpoints must be reachable
# from outside the container. The environment beats a --config file (flags
# beat both): set these two with flags, or keep them in step with the file.
# Binding 3306 needs no privilege: it is above 1023.
ENV HACONFD_PIDFILE=/run/haproxy/haproxy.pid \
    HACONFD_LISTEN=0.0.0.0:9480

USER 10001:10001
WORKDIR /var/lib/haconfd
EXPOSE 3306 9480

# The HEALTHCHECK is /readyz: etcd connected and the newest revision live.
# It turns unhealthy after three failed probes 10 s apart, i.e. 20-30 s after
# etcd became unreachable (or a render is held by a guard, or the newest
# revision failed to apply); HAProxy keeps serving the last good config
# meanwhile, and Docker does not restart an unhealthy container by itself.
# No curl in the slim image: bash's /dev/tcp speaks enough HTTP. The port is
# the one of HACONFD_LISTEN.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${HACONFD_LISTEN##*:}\" && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

# --stop-haproxy-on-exit: on `docker stop`, haconfd soft-stops its HAProxy
# before it exits (without it, HAProxy would be killed with the container).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/haconfd", "run", "--supervise", "--stop-haproxy-on-exit"]
