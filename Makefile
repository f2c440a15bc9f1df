# cainjekt: build, test and demo. `make test` is what CI runs.

# Expanded once: every step of one run (the binaries, make image, the
# cluster test that checks the image's version) sees the same version.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
GO      ?= go
BIN     := bin/cainjekt
HOOKBIN := bin/cainjekt-hook
LDFLAGS := -s -w -X main.version=$(VERSION)
# The plugin serves /metrics and asks the API server over HTTP/1.1: leaving
# net/http's bundled HTTP/2 out takes 0.6 MB off the binary.
PLUGIN_TAGS := nethttpomithttp2
# ... and is built without inlining: 0.6 MiB less on every node, for 50 ns
# more per container of a pod that did not opt in (docs/benchmarks.md).
PLUGIN_GCFLAGS := all=-l
E2E_TIMEOUT ?= 60m
# make e2e runs on every runtime of the test bed unless this names some.
E2E_RUNTIMES ?=
# make image: the release image, as an OCI layout archive. No registry serves
# ghcr.io/cainjekt/cainjekt: make push names the image in yours.
IMAGE         ?= ghcr.io/cainjekt/cainjekt:$(VERSION)
IMAGE_ARCHIVE ?= bin/cainjekt-image.tar
# make push REGISTRY=registry.example.com/team [TAG=v0.1.0]: pushes
# REGISTRY/cainjekt:TAG and sets DEPLOY/base's image to it.
REGISTRY ?=
TAG      ?= $(VERSION)
DEPLOY   ?= deploy

FUZZTIME ?= 30s
FUZZ_TARGETS = $(shell grep -ho '^func Fuzz[A-Za-z]*' *_test.go | cut -d' ' -f2)

.PHONY: all build image push deps lint unit vendor-check e2e cluster-e2e test demo bench fuzz clean

all: build

# Two binaries of one package: cainjekt (plugin and commands) and
# cainjekt-hook (the hook and the wrapper only, quick to start).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(PLUGIN_TAGS) -gcflags '$(PLUGIN_GCFLAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) .
	CGO_ENABLED=0 $(GO) build -trimpath -tags hookonly -ldflags '$(LDFLAGS)' -o $(HOOKBIN) .

# The release image without a Docker engine: the Dockerfile's two binaries
# for linux/amd64 and linux/arm64, one multi-platform OCI index, written as
# an OCI layout archive that `ctr images import` loads and registry clients
# push. It prints the index's and each platform's digest; the same commit
# and Go give the same digests. It needs Go and nothing else, and no root:
# it runs nothing it built (e2e/release's tests run the binaries, the arm64
# ones under qemu-user). The tools of e2e/ need no module beyond the
# standard library, so they ignore a GOFLAGS=-mod=vendor meant for the
# product's build (e2e/ has no vendor/): that one uses vendor/ if it is there.
E2E_TOOL = cd e2e && GOFLAGS=-mod=readonly $(GO) run
image:
	$(E2E_TOOL) ./cmd/image --src .. --version $(VERSION) --ref $(IMAGE) --out $(abspath $(IMAGE_ARCHIVE))

# make image's image pushed to REGISTRY/cainjekt:TAG with Go alone (no
# Docker, skopeo or kustomize; logins as docker, podman or skopeo stored
# them), and deploy/base's kustomization pointed at it by tag and digest,
# so that `kubectl apply -k deploy/` and every overlay run exactly that.
push: IMAGE = $(if $(REGISTRY),$(REGISTRY)/cainjekt:$(TAG),$(error make push needs REGISTRY, e.g. make push REGISTRY=registry.example.com/team))
push: image
	$(E2E_TOOL) ./cmd/push --archive $(abspath $(IMAGE_ARCHIVE)) --ref $(IMAGE) --kustomization $(abspath $(DEPLOY))/base/kustomization.yaml

deps:
	./scripts/install-deps.sh

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>&1); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags hookonly .
	staticcheck -tags $(PLUGIN_TAGS) ./...
	@out=$$(deadcode -tags hookonly .); if [ -n "$$out" ]; then echo "the hook build holds code it never runs:"; echo "$$out"; exit 1; fi
	@bad=$$($(GO) list -tags hookonly -deps . | grep -E '^(crypto/x509|crypto/tls|encoding/asn1|net/http|github.com/containerd/|google.golang.org/)'); \
	if [ -n "$$bad" ]; then echo "cainjekt-hook starts with every container and must not link:"; echo "$$bad"; exit 1; fi
	cd e2e && $(GO) vet ./... && staticcheck ./...

unit: deps
	CAINJEKT_REQUIRE_TOOLS=1 $(GO) test -count=1 -tags $(PLUGIN_TAGS) ./...
	cd e2e && CAINJEKT_REQUIRE_TOOLS=1 $(GO) test -count=1 ./deploytest ./release

# docs/operations.md's Air-gapped builds, end to end, in a scratch copy of
# the tree (e2e/release's TestAirGappedBuild): go mod vendor; then offline
# (GOPROXY=off, GOFLAGS=-mod=vendor, no module cache) with Go 1.26.0, the
# oldest Go the docs promise, nothing else on PATH but make, as a user who
# is not root: make build, make image, make push to a local registry.
# Fetches Go 1.26.0 from the Go module proxy on its first run.
vendor-check:
	cd e2e && CAINJEKT_AIRGAP=1 $(GO) test -count=1 -timeout 25m -run '^TestAirGappedBuild$$' -v ./release

# The real-node tests: a private node of each runtime (containerd 2.4, 2.2
# and 1.7, CRI-O, with runc), pods driven over CRI; every test on containerd
# 2.4, the ones that matter to each runtime on the others. Needs root.
# Builds and caches the runtimes, runc and the images on first run.
# E2E_RUNTIMES=containerd-2.4,cri-o-1.34 runs those runtimes only.
e2e: deps build
	@[ "$$(id -u)" -eq 0 ] || { echo "make e2e needs root (it runs containerd)"; exit 1; }
	cd e2e && CAINJEKT_E2E=1 $(GO) test -count=1 -timeout 40m ./testbed
	cd e2e && $(GO) test -c -o bin/e2e.test .
	cd e2e && CAINJEKT_BIN=$(abspath $(BIN)) ./bin/e2e.test -test.v -test.timeout $(E2E_TIMEOUT) -e2e.runtimes='$(E2E_RUNTIMES)'

# The install path on a real single-node Kubernetes: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy and a kubelet of one
# release on the test bed's containerd and runc, pods on the CNI bridge
# plugin; make image's image pushed with make push to a local registry and
# pulled from it, deploy/ applied as the docs say.
# Needs root. Builds and caches Kubernetes on first run (about half an hour).
cluster-e2e: deps build image
	@[ "$$(id -u)" -eq 0 ] || { echo "make cluster-e2e needs root (it runs a kubelet)"; exit 1; }
	cd e2e && $(GO) test -c -o bin/cluster.test ./cluster
	cd e2e/cluster && CAINJEKT_BIN=$(abspath $(BIN)) CAINJEKT_VERSION=$(VERSION) CAINJEKT_IMAGE=$(IMAGE) \
		CAINJEKT_IMAGE_ARCHIVE=$(abspath $(IMAGE_ARCHIVE)) ../bin/cluster.test -test.v -test.timeout $(E2E_TIMEOUT)

test: lint unit vendor-check e2e cluster-e2e

# A private real node: the same pod without and with cainjekt, side by side.
demo: deps build
	@[ "$$(id -u)" -eq 0 ] || { echo "make demo needs root (it runs containerd)"; exit 1; }
	cd e2e && $(GO) run ./cmd/demo --cainjekt $(abspath $(BIN))

# The hot paths in go benchmarks (the hook on a fat image's root
# filesystem among them), then the cost on a real node with that image: pod
# start latency without and with the plugin, hook and wrapper time, the
# plugin's footprint after a churn, binary sizes, each against the budget.
bench: deps build
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench needs root (it runs containerd)"; exit 1; }
	cd e2e && $(GO) run ./cmd/bench --cainjekt $(abspath $(BIN)) --repo $(CURDIR)

# Each fuzz target for FUZZTIME; their seed corpora (testdata/fuzz) also run
# in make unit. A target fails when it writes a failing input there. Each new
# input is minimised for at most 1000 runs: minimising for a time (60 s by
# default) stalled the bundle targets at a few runs a minute. Go 1.26's
# fuzz coordinator can also end a run with "context deadline exceeded" and no
# input at all, under load (golang/go#75804, fixed in Go 1.27): that is said,
# not failed.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZTIME)"; \
		before=$$(ls testdata/fuzz/$$t 2>/dev/null | wc -l); \
		if ! $(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x .; then \
			if [ "$$(ls testdata/fuzz/$$t 2>/dev/null | wc -l)" -gt "$$before" ]; then \
				echo "fuzz: $$t found a failing input, in testdata/fuzz/$$t"; exit 1; \
			fi; \
			echo "fuzz: $$t ended with Go's coordinator race (golang/go#75804), no failing input"; \
		fi; \
	done

clean:
	rm -rf bin e2e/bin
