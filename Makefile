# edgegate's build and test entry points. `make test` is the README's test
# command and what CI runs (.ci/run): it installs what the tests need on a
# fresh Debian machine when run as root, then runs vet and the race-enabled
# tests.

GO        ?= go
GOFLAGS   ?=
TESTFLAGS ?= -race -count=1 -timeout 30m

# Debian packages the tests use: real peers (nginx with its stream module,
# HAProxy), clients (curl, openssl), a TLS scanner (testssl.sh), the eBPF
# toolchain (clang-19, llvm-19 for llvm-strip, libbpf headers), network
# namespaces (iproute2), system call counts per connection
# (strace, for edgegate-bench --syscalls), promtool for the alerting rules in
# deploy/prometheus (prometheus), and logrotate for deploy/logrotate.
DEB_PACKAGES := nginx libnginx-mod-stream haproxy curl openssl testssl.sh clang-19 llvm-19 libbpf-dev linux-libc-dev iproute2 ca-certificates strace prometheus logrotate

.PHONY: all build test deps vet fmt-check generate check-generated demo

all: build

build:
	$(GO) build $(GOFLAGS) -o bin/ ./cmd/...

## test: install test prerequisites, then vet, generated-code check and race tests
test: deps fmt-check vet check-generated
	$(GO) test $(GOFLAGS) $(TESTFLAGS) ./...

## deps: install missing Debian packages (as root) and download Go modules
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
			: "the tests need only promtool: the server the package starts would hold :9090, the example configuration's metrics port"; \
			if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then systemctl disable --now prometheus; fi; \
		else \
			echo "missing Debian packages (tests that need them will skip):$$missing"; \
		fi; \
	fi
	$(GO) mod download

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## generate: rebuild the eBPF objects and their Go bindings (needs clang-19)
generate:
	$(GO) generate ./bpf/

## check-generated: regenerate the eBPF objects and fail if they differ from what is committed
check-generated:
	$(GO) generate ./bpf/
	@git diff --exit-code --stat -- bpf/ && test -z "$$(git status --porcelain -- bpf/)" || \
		{ echo "bpf/: generated files differ from the committed ones; run make generate and commit"; exit 1; }

demo:
	$(GO) run ./cmd/edgegate demo
