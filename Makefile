# egressha build, test and lab entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
OUT       ?= _output
BIN       := $(OUT)/bin
CONTROLLER_GEN_VERSION := v0.18.0
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
GOTESTSUM := $(GO) run gotest.tools/gotestsum@v1.13.0

# Version stamps come from hack/ldflags at recipe run time: nothing here may
# run go while make reads this file (`make check-fresh`).
# As upstream: static binaries; the operator needs its IPAM provider tag.
BUILD_ENV   := CGO_ENABLED=0
AGENT_TAGS  := osusergo
OPER_TAGS   := osusergo,ipam_provider_operator

.PHONY: check-fresh fuzz kubectl help build agent operator cilium-tools lab-bin lab-deps lab lab-down lab-status generate verify-generate test test-unit test-e2e lint bench clean

help: ## List targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: agent operator ## Build both binaries into _output/bin.

# The agent and operator share most packages; building them one after the
# other keeps peak memory at one link (~3.3 GiB) and reuses the build cache.
agent: ## Build the custom cilium-agent.
	@mkdir -p $(BIN)
	ldflags=$$(GO=$(GO) hack/ldflags) && $(BUILD_ENV) $(GO) build -tags $(AGENT_TAGS) -ldflags "$$ldflags" -o $(BIN)/cilium-agent ./images/cilium-agent

operator: ## Build the custom cilium-operator-generic.
	@mkdir -p $(BIN)
	ldflags=$$(GO=$(GO) hack/ldflags) && $(BUILD_ENV) $(GO) build -tags $(OPER_TAGS) -ldflags "$$ldflags" -o $(BIN)/cilium-operator-generic ./images/cilium-operator

generate: ## Regenerate deepcopy and CRD manifests from egressgw/api.
	$(CONTROLLER_GEN) object paths=./egressgw/api/... crd:crdVersions=v1 output:crd:artifacts:config=crds
	gofmt -w egressgw/api

verify-generate: generate ## Fail if generated files are not committed up to date.
	@git diff --exit-code -- crds egressgw/api || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- crds egressgw/api)" || { git status --porcelain -- crds egressgw/api; echo "untracked generated files: run 'make generate' and commit" >&2; exit 1; }

lint: ## go vet, gofmt and staticcheck (both modules).
	$(GO) vet -tags $(OPER_TAGS) ./...
	cd test && $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }
	$(STATICCHECK) -tags $(OPER_TAGS) ./...
	cd test && $(STATICCHECK) ./...

test-unit: ## Go tests of the product module (privileged ones need root).
	@mkdir -p $(OUT)
	$(GOTESTSUM) --format pkgname-and-test-fails --jsonfile $(OUT)/test-unit.json -- -tags $(OPER_TAGS) -count=1 ./...

# The e2e tests bring the lab up themselves (same code as `make lab`) and
# take it down; they need root and everything `make lab` builds.
test-e2e: lab-deps build cilium-tools lab-bin kubectl ## End-to-end tests against the lab (root).
	@mkdir -p $(OUT)
	cd test && $(LAB_ENV) $(GOTESTSUM) --format standard-verbose --jsonfile $(abspath $(OUT))/test-e2e.json -- -count=1 -timeout 45m -skip '^TestBench' ./...

# CI's machine has every module cached, so a value that make computes with go
# while reading this file (e.g. a module's directory from `go list -m`) works
# there and is empty on a fresh machine, where no module has been downloaded
# yet. This dry run replaces go by hack/no-go, which records every call: make
# itself must not run go, only recipes may (hack/cilium-dir, hack/ldflags).
FRESH_TARGETS := build lab lab-status lab-down test-unit fuzz test-e2e lint bench kubectl
check-fresh: ## Fail if make runs go before a recipe could download modules (the fresh-machine bug class).
	@log=$$(mktemp); rc=0; \
	NO_GO_LOG=$$log $(MAKE) --no-print-directory -n GO=$(CURDIR)/hack/no-go $(FRESH_TARGETS) >/dev/null || rc=$$?; \
	if [ -s $$log ] || [ $$rc -ne 0 ]; then \
		echo "check-fresh: make ran go while expanding the Makefile (exit $$rc); on a fresh machine these values are empty:" >&2; \
		sed 's/^/    /' $$log >&2; rm -f $$log; exit 1; \
	fi; rm -f $$log; echo "check-fresh: make runs go only inside recipes"

# Fuzz targets (package:Target), each run for FUZZ_TIME in `make test`; their
# seed corpora also run as plain tests in test-unit. A crasher go test finds
# is written to the package's testdata/fuzz and then fails every run;
# hack/fuzz-one retries once a run that only hit Go's -fuzztime deadline race.
FUZZ_TARGETS := vipd:FuzzReceive egressgw/heartbeat:FuzzDecodeReport egressgw/egresspolicy:FuzzPolicyConversion egressgw/cegp:FuzzPolicyConversion egressgw/cegp:FuzzDecode egressgw/probe:FuzzDecode egressgw/connterm:FuzzTracker egressgw/connsync:FuzzDecode egressgw/connsync:FuzzDecodeSigned
FUZZ_TIME    ?= 5s
fuzz: ## Run every fuzz target for FUZZ_TIME.
	@for t in $(FUZZ_TARGETS); do \
		hack/fuzz-one $(GO) $(OPER_TAGS) $${t%%:*} $${t#*:} $(FUZZ_TIME) || exit 1; \
	done

test: check-fresh verify-generate lint build test-unit fuzz test-e2e ## Everything CI runs.
	@hack/test-summary $(OUT)/test-unit.json $(OUT)/test-e2e.json

# ---- The lab: a real Cilium cluster in network namespaces (test/lab) ----
# Tools the agents need at run time: LLVM 19 (the version Cilium v1.18's
# images ship) to compile the datapath, iptables/ipset, kmod.
LAB_APT := clang-19 llvm-19 iptables ipset kmod
# The Cilium module's directory is looked up by the shell when the recipe line
# runs, after the builds before it have downloaded the modules: a make-time
# $(shell go list ...) is expanded before any recipe line runs and is empty on
# a fresh machine (`make check-fresh` guards this).
LAB_ENV = EGRESSHA_LAB_BIN=$(abspath $(BIN)) EGRESSHA_LAB_REPO=$(CURDIR) EGRESSHA_LAB_CILIUM="$$($(CURDIR)/hack/cilium-dir)"

LAB := $(BIN)/egressha-lab

lab-deps: ## Install the lab's apt packages if missing.
	@missing=$$(for p in $(LAB_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "==> installing $$missing (apt)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

cilium-tools: ## Build cilium-cni and cilium-dbg from the Cilium module (go.mod tool directives).
	@mkdir -p $(BIN)
	$(BUILD_ENV) $(GO) build -o $(BIN)/cilium-cni github.com/cilium/cilium/plugins/cilium-cni
	$(BUILD_ENV) $(GO) build -o $(BIN)/cilium-dbg github.com/cilium/cilium/cilium-dbg

lab-bin: ## Build the lab CLI (nested module test/: kube-apiserver, etcd).
	@mkdir -p $(BIN)
	cd test && $(GO) build -o ../$(LAB) ./lab

# kubectl of the lab's Kubernetes version (test/go.mod's k8s.io/kubernetes),
# with the version stamps a release build sets.
KUBE_VERSION_PKG := k8s.io/component-base/version
kubectl: ## Build kubectl at the lab's Kubernetes version into _output/bin.
	@mkdir -p $(BIN)
	cd test && v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubernetes) && minor=$$(echo $$v | cut -d. -f2) && \
		$(BUILD_ENV) $(GO) build -ldflags "-s -w -X $(KUBE_VERSION_PKG).gitVersion=$$v -X $(KUBE_VERSION_PKG).gitMajor=1 -X $(KUBE_VERSION_PKG).gitMinor=$$minor" \
		-o ../$(BIN)/kubectl k8s.io/kubernetes/cmd/kubectl

lab: lab-deps ## Bring up the lab on this machine (builds what is missing, `egressha-lab up`), then show the demo.
	@hack/progress "building cilium-agent (cold: 5 to 7 min)" $(MAKE) --no-print-directory agent
	@hack/progress "building cilium-operator-generic" $(MAKE) --no-print-directory operator
	@hack/progress "building cilium-cni and cilium-dbg" $(MAKE) --no-print-directory cilium-tools
	@hack/progress "building the lab (kube-apiserver, etcd; cold: 3 to 6 min)" $(MAKE) --no-print-directory lab-bin
	@hack/progress "building kubectl (cold: about 2 min)" $(MAKE) --no-print-directory kubectl
	$(LAB_ENV) $(LAB) up $(LAB_ARGS)
	$(if $(findstring stock,$(LAB_ARGS)),@echo "==> stock mode: no demo (it shows egressha's gateways)",$(LAB_ENV) $(LAB) demo)

lab-status: ## Show the lab's state.
	@$(LAB_ENV) $(LAB) status

lab-down: ## Remove everything the lab made.
	@if [ -x $(LAB) ]; then $(LAB_ENV) $(LAB) down; else echo "no lab binary: nothing to take down"; fi

# ---- Benchmarks (issue 8): `make bench` as root writes BENCHMARKS.md ----
# Knobs (the defaults produce every figure; raise them for tighter tails).
BENCH_TRIALS       ?= 20
BENCH_STOCK_TRIALS ?= 3
BENCH_STOCK_WAIT   ?= 45s
BENCH_NEW_PODS     ?= 50
BENCH_MEMORY_ENDPOINTS ?= 10000
BENCH_REPORT       ?= BENCHMARKS.md
BENCH_RESULTS       = $(abspath $(OUT))/results
BENCH_GO_CMD        = $(GO) test -tags $(OPER_TAGS) -run ^$$ -bench . -benchmem ./...
BENCH_LAB_ENV       = EGRESSHA_BENCH=1 EGRESSHA_BENCH_TRIALS=$(BENCH_TRIALS) EGRESSHA_BENCH_STOCK_TRIALS=$(BENCH_STOCK_TRIALS) \
	EGRESSHA_BENCH_STOCK_WAIT=$(BENCH_STOCK_WAIT) EGRESSHA_BENCH_NEW_PODS=$(BENCH_NEW_PODS) \
	EGRESSHA_BENCH_MEMORY_ENDPOINTS=$(BENCH_MEMORY_ENDPOINTS) EGRESSHA_RESULTS_DIR=$(BENCH_RESULTS)
BENCH_LAB_CMD       = $(GO) test -count=1 -timeout 180m -run ^TestBench -v ./e2e/

bench: lab-deps build cilium-tools lab-bin kubectl ## Run every benchmark (Go, then the lab vs stock Cilium) and write BENCHMARKS.md (root).
	@rm -rf $(BENCH_RESULTS) && mkdir -p $(BENCH_RESULTS)
	set -o pipefail; $(BENCH_GO_CMD) 2>&1 | tee $(BENCH_RESULTS)/go-bench.txt
	@echo "==> lab benchmarks (full log: $(BENCH_RESULTS)/lab-bench.log)"
	@set -o pipefail; rc=0; \
	(cd test && $(LAB_ENV) $(BENCH_LAB_ENV) $(BENCH_LAB_CMD)) 2>&1 | tee $(BENCH_RESULTS)/lab-bench.log \
		| grep --line-buffered -E '(bench_test|conns_test|hitless_test).go|^(--- |ok|FAIL|PASS)' || rc=$$?; \
	cd test && $(GO) run ./benchreport -results $(BENCH_RESULTS) -out $(abspath $(BENCH_REPORT)) -repo $(CURDIR) \
		-gobench-cmd '$(BENCH_GO_CMD)' \
		-lab-cmd 'cd test && $(BENCH_LAB_ENV) $(BENCH_LAB_CMD)' || rc=$$?; \
	echo "==> wrote $(BENCH_REPORT) and $(dir $(BENCH_REPORT))BENCHMARKS-failover.png (results in $(BENCH_RESULTS))"; \
	exit $$rc

clean: ## Remove build outputs.
	rm -rf $(OUT)
