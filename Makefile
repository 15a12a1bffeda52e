GO      ?= go
BIN     ?= bin/volctl
PKGS    ?= ./...

.PHONY: all build test test-unit fuzz bench bench-smoke bench-volumes vet lint run clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cli/volctl

vet:
	$(GO) vet $(PKGS)

# Hygiene CI enforces (make test runs it): gofmt, go vet, staticcheck (pinned by go.mod's tool
# directive, so nothing to install) and go.mod/go.sum as `go mod tidy` would leave them.
lint: vet
	@out=$$(gofmt -l .); \
	  if [ -n "$$out" ]; then echo "gofmt -l: not formatted (run gofmt -w):"; echo "$$out"; exit 1; fi
	$(GO) tool staticcheck $(PKGS)
	$(GO) mod tidy -diff

# The one test command (CI runs it as root through .ci/run).
test: lint
	$(GO) test -count=1 -timeout 25m $(PKGS)
	$(MAKE) fuzz
	$(MAKE) bench-smoke

# A short run of every fuzz target. Go 1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" when -fuzztime ends while a worker is mid-call (golang/go#75804,
# fixed in Go 1.27): such a run, with no failing input written and no panic, is run once more;
# anything else fails at once.
FUZZTIME ?= 10s
fuzz:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    for try in 1 2; do \
	      echo "fuzz $$pkg $$f"; \
	      if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then \
	        cat $$log; break; fi; \
	      cat $$log; \
	      if [ $$try = 2 ] || ! grep -q 'context deadline exceeded' $$log || \
	         grep -qE 'Failing input written|panic:|_test.go:[0-9]+:' $$log; then exit 1; fi; \
	      echo "fuzz $$f: Go's fuzztime deadline race (golang/go#75804), running it again"; \
	    done; \
	  done; \
	done

# Benchmarks (bench/): `bench` is the full-size run whose table and chart go into the README;
# `bench-smoke` runs every workload at a tiny size to prove the harness works (CI, no timing checks).
BENCH_OUT       ?= bench/results
BENCH_SMOKE_OUT ?= bin/bench-smoke
BENCH_FLAGS     ?=
bench: build
	$(GO) run ./bench/cmd/fusevol-bench --volctl $(BIN) --out $(BENCH_OUT) -v $(BENCH_FLAGS)
	$(MAKE) bench-volumes

# 50 volumes of one daemon written at once: anonymous memory and throughput against 1 volume
# (plugin BenchmarkManyVolumes; issue 12's goal is < 512 MiB and no loss).
bench-volumes:
	$(GO) test -run '^$$' -bench ManyVolumes -benchtime 3x ./plugin/

bench-smoke: build
	$(GO) run ./bench/cmd/fusevol-bench --smoke --volctl $(BIN) --out $(BENCH_SMOKE_OUT) $(BENCH_FLAGS)

# Go benchmarks of the FUSE layer (fs/): native dir, go-fuse loopback and fusevol in one run (root).
bench-fs:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./fs/

clean:
	rm -rf bin

# --- plugin packaging (plugin/) ---
PREFIX      ?= /usr/local
UNITDIR     ?= /etc/systemd/system
PLUGIN_NAME ?= fusevol

.PHONY: install plugin plugin-create

# Build and run the daemon in the foreground with the default root and socket (needs root).
run: build
	./$(BIN) daemon

# Install the binary, mount(8)'s helper (so `mount -t fuse.fusevol` and fstab lines work) and
# the systemd unit (Before=docker.service); enable it with `systemctl enable --now fusevol`.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/volctl
	install -d $(DESTDIR)/sbin && ln -sf $(PREFIX)/bin/volctl $(DESTDIR)/sbin/mount.fuse.fusevol
	install -D -m 0644 plugin/systemd/fusevol.service $(DESTDIR)$(UNITDIR)/fusevol.service
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
	  systemctl daemon-reload; fi

# Managed plugin: plugin/config.json plus plugin/rootfs holding the static binary. Then:
#   docker plugin create fusevol ./plugin && docker plugin enable fusevol
plugin:
	rm -rf plugin/rootfs
	mkdir -p plugin/rootfs/run/docker/plugins plugin/rootfs/mnt/volumes plugin/rootfs/mnt/state \
	  plugin/rootfs/tmp plugin/rootfs/dev plugin/rootfs/proc plugin/rootfs/sys plugin/rootfs/etc
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o plugin/rootfs/volctl ./cli/volctl
	touch plugin/rootfs/etc/resolv.conf plugin/rootfs/etc/hosts

# Build, then create and enable the managed plugin on the local Docker engine.
plugin-create: plugin
	docker plugin create $(PLUGIN_NAME) ./plugin
	docker plugin enable $(PLUGIN_NAME)
