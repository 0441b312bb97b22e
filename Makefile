# haconfd — see README.md. `make demo` and `make test` do all set-up on a
# fresh Debian machine (they install HAProxy from Debian when missing).
#
# Two HAProxy versions: the machine's (Debian 12: 2.6) and 3.0 LTS (Debian
# 13's package, `make haproxy30` installs it into .cache/haproxy-3.0).
# `make test` runs the packages whose tests start HAProxy against each one
# that is there; CI (CI=true) fails when 3.0 is missing. Any test package
# runs against another binary with HACONFD_TEST_HAPROXY=/path/to/haproxy.
SHELL   := /bin/bash
GO      ?= go
BIN     := bin/haconfd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# HAProxy 3.0 as scripts/install-haproxy30.sh installs it.
HAPROXY30 ?= $(CURDIR)/.cache/haproxy-3.0/bin/haproxy
# The machine's HAProxy, as the tests find it (internal/testhaproxy).
HAPROXY   := $${HACONFD_TEST_HAPROXY:-$$(command -v haproxy || echo /usr/sbin/haproxy)}
# The packages whose tests start HAProxy: those that use internal/testhaproxy.
HAPROXY_PKGS = $$($(GO) list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}} ' ./... | \
	sed -n 's| \(.* \)*github.com/haconfd/haconfd/internal/testhaproxy .*||p')

.PHONY: all build test demo bench lint deps fmt clean fuzz readme haproxy30 dashboard

FUZZTIME ?= 30s

all: build

deps:
	@command -v haproxy >/dev/null 2>&1 || command -v /usr/sbin/haproxy >/dev/null 2>&1 || \
		{ echo "installing haproxy from Debian's packages"; \
		  $(SUDO) apt-get update && $(SUDO) apt-get install -y haproxy; }

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/haconfd

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

haproxy30:
	scripts/install-haproxy30.sh

# Every package against the machine's HAProxy, then the HAProxy packages
# again against 3.0. The line before each run names the version.
test: deps lint
	@scripts/loopback-notrack.sh
	@export PATH="$$PATH:/usr/sbin"; echo "== go test ./... against $$($(HAPROXY) -v | sed -n 1p) ($(HAPROXY))"
	set -o pipefail; PATH="$$PATH:/usr/sbin" $(GO) test -json -race -count=1 -timeout 15m ./... | $(GO) run ./e2e/testsummary
	@if [ -x "$(HAPROXY30)" ]; then \
		echo "== the HAProxy packages again, against $$($(HAPROXY30) -v | sed -n 1p) ($(HAPROXY30))"; \
		set -o pipefail; PATH="$$PATH:/usr/sbin" HACONFD_TEST_HAPROXY=$(HAPROXY30) $(GO) test -json -race -count=1 -timeout 15m $(HAPROXY_PKGS) | $(GO) run ./e2e/testsummary; \
	elif [ "$$CI" = true ]; then \
		echo "HAProxy 3.0 is missing at $(HAPROXY30) (CI=true): run make haproxy30"; exit 1; \
	else \
		echo "== HAProxy 3.0 not installed at $(HAPROXY30): not tested against it (make haproxy30 installs it)"; \
	fi

demo: deps build
	PATH="$$PATH:/usr/sbin" $(GO) run ./examples/demo -haconfd $(BIN)

# The whole table against the machine's HAProxy; with 3.0 installed, the
# rows that depend on HAProxy run again on it and a side-by-side table
# follows.
bench: deps build
	@compare=; if [ -x "$(HAPROXY30)" ]; then compare="-compare $(HAPROXY30)"; fi; \
	PATH="$$PATH:/usr/sbin" $(GO) run ./e2e/bench -haconfd $(BIN) $$compare

# The page's screenshots, docs/dashboard.png (a laptop, the whole page) and
# docs/dashboard-phone.png (a phone's first screen), taken by the browser
# end-to-end test (e2e TestPage); installs Debian's chromium when missing.
dashboard: deps
	@command -v chromium >/dev/null 2>&1 || \
		{ echo "installing chromium from Debian's packages"; \
		  $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium fonts-dejavu-core; }
	@mkdir -p docs
	PATH="$$PATH:/usr/sbin" HACONFD_PAGE_PNG=$(CURDIR)/docs/dashboard.png $(GO) test -count=1 -run '^TestPage$$' ./e2e
	@echo "page: $$(wc -c < internal/app/page.html) bytes (internal/app/page.html); screenshots: $$(wc -c < docs/dashboard.png) and $$(wc -c < docs/dashboard-phone.png) bytes"

# The flag reference in README.md, from the cobra commands.
readme:
	$(GO) test ./cmd/haconfd -run TestREADMEFlags -update-readme

# Each fuzz target for FUZZTIME (CI runs only their seed corpus, in make test).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseNodes$$' -fuzztime $(FUZZTIME) ./render
	$(GO) test -run '^$$' -fuzz '^FuzzRender$$' -fuzztime $(FUZZTIME) ./render
	$(GO) test -run '^$$' -fuzz '^FuzzFastPaths$$' -fuzztime $(FUZZTIME) ./render

clean:
	rm -rf bin

# The real-Galera end-to-end test (three mariadbd + haconfd + HAProxy; root, installs packages).
.PHONY: e2e-galera
e2e-galera:
	bash e2e/galera/run.sh

# The same against HAProxy 3.0 (installs it first).
.PHONY: e2e-galera30
e2e-galera30:
	bash e2e/galera/run.sh --haproxy30

# The container end-to-end test: builds the image from the Dockerfile on a
# machine without a registry (e2e/docker/base-images.sh makes its base
# images) and runs it: supervise mode, the sidecar and the compose examples
# (root, a running Docker engine; installs debootstrap and docker-compose).
# E2E_DOCKER_ARGS go to e2e/docker/main.go (e.g. -only images, -skip-images).
.PHONY: e2e-docker
e2e-docker:
	bash e2e/docker/run.sh $(E2E_DOCKER_ARGS)

# The virtual-IP end-to-end test: three load balancers as network
# namespaces, each with keepalived (examples/keepalived/), haconfd and
# HAProxy, a client on the virtual IP, and the failure scenarios; prints the
# scenario table and the failover figures (root; installs keepalived,
# iptables and iproute2 from Debian; ~3 min).
.PHONY: e2e-vip
e2e-vip:
	bash e2e/vip/run.sh

# The chaos soak: a 3-member etcd cluster, three load balancers (one
# --supervise, one in a network namespace cut off from etcd by faults), 8
# registered backends and 32 clients per frontend, under random faults
# chosen by SEED (default: a random one, printed) for DURATION; checks
# haconfd's promises all the time and prints the faults, the checks, the
# failed connections by cause and the convergence after each storm. A
# failing run looks for the smallest fault set that still fails; FAULTS=
# replays only those (root; installs iproute2, iptables and etcd-server).
SEED     ?= 0
DURATION ?= 10m
FAULTS   ?=
.PHONY: chaos
chaos:
	bash e2e/chaos/run.sh -seed $(SEED) -duration $(DURATION) $(if $(FAULTS),-faults $(FAULTS))
