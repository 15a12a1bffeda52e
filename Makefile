GO      ?= go
BIN     ?= bin/volctl
PKGS    ?= ./...

.PHONY: all build test test-unit fuzz bench bench-smoke vet run clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cli/volctl

vet:
	$(GO) vet $(PKGS)

# The one test command (CI runs it as root through .ci/run).
test: vet
	$(GO) test -count=1 -timeout 25m $(PKGS)
	$(MAKE) fuzz

# A short run of every fuzz target.
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
