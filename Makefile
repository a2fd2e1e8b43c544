# bkcache: two plugins over one pkg/. `make help` lists the targets.
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X github.com/bkcache/bkcache/pkg/version.Version=$(VERSION)
BUILD_DIR     ?= .build
DOCKER_CONFIG ?= $(HOME)/.docker
PREFIX        ?= /usr/local
GO            ?= go
# CI and tests: fail rather than skip; one package at a time on 2 cores.
TEST_FLAGS    ?= -count=1 -p 1 -timeout 30m
# One set of build flags for lint, tests, builds and releases (static, no build
# paths), so a cold run compiles each package once and the release build reuses it.
export CGO_ENABLED = 0
export GOFLAGS += -trimpath

.PHONY: help build install dist docs setup test unit fuzz e2e bench bench-deploy lint clean

help:
	@echo "build    build both plugins into $(BUILD_DIR)/"
	@echo "install  build, then install docker-bkcache into $(DOCKER_CONFIG)/cli-plugins and kubectl-bkcache into $(PREFIX)/bin"
	@echo "dist     release archives for $(DIST_ARCHES) into $(DIST_DIR)/: bkcache-VERSION-linux-ARCH.tar.gz, SHA256SUMS, krew's bkcache.yaml, the registry image archives (DIST_IMAGE=0 leaves them out)"
	@echo "unit     unit tests of every package with the race detector (-race; no Docker, no cluster)"
	@echo "test     lint, unit tests and end-to-end tests against the real Docker engine (installs and starts what they need)"
	@echo "e2e      end-to-end tests against a real Kubernetes of CLUSTER_NODES=3 nodes built from source (scripts/cluster)"
	@echo "bench    cache front benchmark (N clients: direct vs registry:2 alone vs bkcache's front), pull benchmark (direct vs cold vs warm cache), copy benchmark (push vs crane, skopeo, docker loop; upstream bytes per way of filling a cache), images vs helm template + grep (a 138-template chart, a 32-release helmfile), images vs resolve + helm template per release (a 64-release suite of nested helmfiles with derivePassword), then bench-deploy"
	@echo "bench-deploy  a BlueKing-shaped deployment on a 3-node cluster over one 8 MiB/s link: upstream directly vs a cold vs a warmed cache (time to Ready, upstream bytes, bytes per node); mirror on 1 vs 3 nodes (P4)"
	@echo "fuzz     fuzz the input parsers, 100k executions per target (FUZZTIME=10m for a deeper run)"
	@echo "docs     regenerate docs/reference (one page per command) from the commands; make test fails when it is stale"
	@echo "lint     gofmt and go vet"
	@echo "clean    remove $(BUILD_DIR)/"

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BUILD_DIR)/docker-bkcache ./cmd/docker-bkcache
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BUILD_DIR)/kubectl-bkcache ./cmd/kubectl-bkcache

install: build
	bash scripts/setup.sh
	install -D -m 0755 $(BUILD_DIR)/docker-bkcache $(DOCKER_CONFIG)/cli-plugins/docker-bkcache
	install -D -m 0755 $(BUILD_DIR)/kubectl-bkcache $(PREFIX)/bin/kubectl-bkcache
	@echo "installed: docker bkcache ($(DOCKER_CONFIG)/cli-plugins), kubectl bkcache ($(PREFIX)/bin)"

# Release files, reproducibly (scripts/dist.sh says how). DIST_URL is where the
# archives will be published: the krew manifest's uri base.
DIST_DIR      ?= $(BUILD_DIR)/dist
DIST_ARCHES   ?= amd64 arm64
DIST_URL      ?= https://github.com/bkcache/bkcache/releases/download/$(VERSION)
# auto: the registry image archives too when this host has apt-get (1 insists, 0 skips).
DIST_IMAGE    ?= auto
dist:
	VERSION=$(VERSION) DIST_DIR=$(DIST_DIR) DIST_ARCHES="$(DIST_ARCHES)" DIST_URL=$(DIST_URL) \
	  DIST_IMAGE=$(DIST_IMAGE) GO=$(GO) bash scripts/dist.sh

# The command reference, generated from the cobra commands (internal/gendocs;
# its test, run by make test, fails when docs/reference is stale).
docs:
	$(GO) run ./internal/gendocs docs/reference

setup:
	bash scripts/setup.sh --test

test: setup lint
	$(GO) test $(TEST_FLAGS) -tags e2e ./...
	$(MAKE) fuzz

# Fuzzing of the parsers that take user input: image references, values and
# manifests, containerd's config.toml and hosts.toml. Each target checks an
# invariant (fixed point, idempotence, round trip), not only "no panic".
# 100000x = 100k executions per target: 6-40 s each on 2 cores (measured
# 15k, 3.6k, 2.7k and 3k execs/s); deeper runs: make fuzz FUZZTIME=10m.
FUZZTIME ?= 100000x
fuzz:
	$(GO) test ./pkg/imageref/ -run '^$$' -fuzz FuzzNormalize -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/images/ -run '^$$' -fuzz FuzzValues -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/containerd/ -run '^$$' -fuzz FuzzEnsureConfigPath -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/containerd/ -run '^$$' -fuzz FuzzMergeHosts -fuzztime $(FUZZTIME)

# The race detector needs cgo: this target alone builds with CGO_ENABLED=1.
unit: export CGO_ENABLED = 1
unit:
	$(GO) test $(TEST_FLAGS) -race ./...

# One cluster of three nodes for every cluster test: the multi-node tests need them, the
# single-node ones pin themselves to the first node.
CLUSTER_NODES ?= 3
e2e:
	bash scripts/cluster-deps.sh
	scripts/cluster up --nodes $(CLUSTER_NODES)
	$(GO) test $(TEST_FLAGS) -tags cluster ./...; rc=$$?; scripts/cluster down; exit $$rc

bench:
	bash scripts/setup.sh --bench
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkFront -benchtime 1x -timeout 120m ./test/e2e/docker
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkPull -benchtime 3x ./test/e2e/docker
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkCopy -benchtime 1x -timeout 60m ./test/e2e/docker
	$(GO) test -count=1 -run '^$$' -bench BenchmarkImagesVsHelmTemplate -benchtime 10x -timeout 60m ./pkg/helmfile/
	$(GO) test -count=1 -run '^$$' -bench BenchmarkSuiteVsResolvePlusTemplate -benchtime 3x -timeout 30m ./pkg/helmfile/
	$(MAKE) bench-deploy

# The deployment benchmark and mirror's cost per node count, on the 3-node test cluster
# (started here, stopped after); needs Docker for the cache, like the e2e tests.
bench-deploy:
	bash scripts/setup.sh --test
	bash scripts/cluster-deps.sh
	scripts/cluster up --nodes $(CLUSTER_NODES)
	$(GO) test -count=1 -tags cluster -run '^$$' -bench 'BenchmarkDeploy$$|BenchmarkNodesCacheSilent$$' -benchtime 1x -timeout 40m ./test/e2e/kubectl/ && \
	$(GO) test -count=1 -tags cluster -run '^$$' -bench 'BenchmarkMirrorNodes$$' -benchtime 5x -timeout 40m ./test/e2e/kubectl/; \
	rc=$$?; scripts/cluster down; exit $$rc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags cluster ./...

clean:
	rm -rf $(BUILD_DIR)
