# haconfd — see README.md. `make demo` and `make test` do all set-up on a
# fresh Debian machine (they install HAProxy from Debian when missing).
GO      ?= go
BIN     := bin/haconfd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test demo bench lint deps fmt clean fuzz readme

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

test: deps lint
	PATH="$$PATH:/usr/sbin" $(GO) test -race -count=1 -timeout 15m ./...

demo: deps build
	PATH="$$PATH:/usr/sbin" $(GO) run ./examples/demo -haconfd $(BIN)

bench: deps build
	PATH="$$PATH:/usr/sbin" $(GO) run ./e2e/bench -haconfd $(BIN)

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

# The container end-to-end test: builds the image from the Dockerfile on a
# machine without a registry (e2e/docker/base-images.sh makes its base
# images) and runs it: supervise mode, the sidecar and the compose examples
# (root, a running Docker engine; installs debootstrap and docker-compose).
.PHONY: e2e-docker
e2e-docker:
	bash e2e/docker/run.sh
