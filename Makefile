# auth-router: `make demo` runs the demo gateway, `make test` runs every suite,
# `make fuzz` runs every fuzz target, `make soak` the soak run (docs/reliability.md).
ROCKSPEC := kong-plugin-auth-router-0.1.0-1.rockspec
TREE     := $(CURDIR)/.tree

.PHONY: deps build tree demo test unit openresty bench soak fuzz clean

deps:
	bash scripts/install-deps.sh

build: deps
	cargo build --release --locked

# A fresh luarocks tree: what a user's `luarocks make` installs.
tree: deps
	rm -rf $(TREE) auth_router_native.so
	luarocks --lua-version=5.1 make --tree $(TREE) $(ROCKSPEC)

demo: tree
	AUTH_ROUTER_TREE=$(TREE) bash scripts/demo.sh

test: deps
	bash scripts/test.sh

bench: tree
	AUTH_ROUTER_TREE=$(TREE) bash bench/suite.sh

# About 300k mixed requests on the demo-like gateway (2 workers) while the log
# collector flaps; fails on worker RSS growth > 5 %, descriptor growth or an
# unexpected error-log line (scripts/soak.sh, docs/reliability.md). About 4
# minutes; not part of `make test`.
soak: tree
	AUTH_ROUTER_TREE=$(TREE) bash scripts/soak.sh

# Every cargo-fuzz target in turn, FUZZ_SECONDS each (one process, so the
# machine stays usable). cargo-fuzz passes -Z flags; RUSTC_BOOTSTRAP=1 lets a
# stable toolchain take them. New inputs go to fuzz/.corpus/<target> (not
# committed); the seeds in fuzz/corpus/<target> are read; crashes land in
# fuzz/artifacts/<target>. Not part of `make test`.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= http1_response config_compile config_value auth_response route_decision record_redact ffi_calls resp_reply
FUZZ_FLAGS   ?=

fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 cargo fuzz build
	set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/.corpus/$$t; \
	  dict=; if [ -f fuzz/dict/$$t.dict ]; then dict=-dict=fuzz/dict/$$t.dict; fi; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t fuzz/.corpus/$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict $(FUZZ_FLAGS); \
	done

clean:
	cargo clean
	rm -rf $(TREE) .tmp auth_router_native.so
