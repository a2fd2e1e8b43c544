# bkcache: two plugins over one pkg/. `make help` lists the targets.
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X github.com/bkcache/bkcache/pkg/version.Version=$(VERSION)
BUILD_DIR     ?= .build
DOCKER_CONFIG ?= $(HOME)/.docker
PREFIX        ?= /usr/local
GO            ?= go
# CI and tests: fail rather than skip; one package at a time on 2 cores.
TEST_FLAGS    ?= -count=1 -p 1 -timeout 30m

.PHONY: help build install setup test unit fuzz e2e bench lint clean

help:
	@echo "build    build both plugins into $(BUILD_DIR)/"
	@echo "install  build, then install docker-bkcache into $(DOCKER_CONFIG)/cli-plugins and kubectl-bkcache into $(PREFIX)/bin"
	@echo "test     lint, unit tests and end-to-end tests against the real Docker engine (installs and starts what they need)"
	@echo "e2e      end-to-end tests against a real single-node Kubernetes built from source (scripts/cluster)"
	@echo "bench    cache front benchmark (N clients: direct vs registry:2 alone vs bkcache's front), pull benchmark (direct vs cold vs warm cache), copy benchmark (push vs crane, skopeo, docker loop; upstream bytes per way of filling a cache)"
	@echo "lint     gofmt and go vet"
	@echo "clean    remove $(BUILD_DIR)/"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BUILD_DIR)/docker-bkcache ./cmd/docker-bkcache
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BUILD_DIR)/kubectl-bkcache ./cmd/kubectl-bkcache

install: build
	bash scripts/setup.sh
	install -D -m 0755 $(BUILD_DIR)/docker-bkcache $(DOCKER_CONFIG)/cli-plugins/docker-bkcache
	install -D -m 0755 $(BUILD_DIR)/kubectl-bkcache $(PREFIX)/bin/kubectl-bkcache
	@echo "installed: docker bkcache ($(DOCKER_CONFIG)/cli-plugins), kubectl bkcache ($(PREFIX)/bin)"

setup:
	bash scripts/setup.sh --test

test: setup lint
	$(GO) test $(TEST_FLAGS) -tags e2e ./...
	$(MAKE) fuzz FUZZTIME=8s

# Brief fuzzing of the parsers that take user input: image references, values,
# containerd's config.toml and hosts.toml.
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./pkg/images/ -run '^$$' -fuzz FuzzNormalize -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/images/ -run '^$$' -fuzz FuzzValues -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/containerd/ -run '^$$' -fuzz FuzzEnsureConfigPath -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/containerd/ -run '^$$' -fuzz FuzzMergeHosts -fuzztime $(FUZZTIME)

unit:
	$(GO) test $(TEST_FLAGS) ./...

e2e:
	bash scripts/cluster-deps.sh
	scripts/cluster up
	$(GO) test $(TEST_FLAGS) -tags cluster ./...; rc=$$?; scripts/cluster down; exit $$rc

bench:
	bash scripts/setup.sh --bench
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkFront -benchtime 1x -timeout 120m ./cmd/docker-bkcache
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkPull -benchtime 3x ./cmd/docker-bkcache
	$(GO) test -count=1 -tags e2e -run '^$$' -bench BenchmarkCopy -benchtime 1x -timeout 60m ./cmd/docker-bkcache
	$(GO) test -count=1 -run '^$$' -bench BenchmarkImagesVsHelmTemplate -benchtime 3x -timeout 30m ./pkg/helmfile/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags cluster ./...

clean:
	rm -rf $(BUILD_DIR)
