# auth-router: `make demo` runs the demo gateway, `make test` runs every suite.
ROCKSPEC := kong-plugin-auth-router-0.1.0-1.rockspec
TREE     := $(CURDIR)/.tree

.PHONY: deps build tree demo test unit openresty bench clean

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

clean:
	cargo clean
	rm -rf $(TREE) .tmp auth_router_native.so
