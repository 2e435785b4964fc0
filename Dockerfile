# Kong 3.9 with the auth-router plugin.
#
#   docker build -t kong-plugin-auth-router:0.1.0 .
#   docker compose up --build          # the demo stack, see docker-compose.yml
#
# Stage "rust" only provides a Rust toolchain. Stage "build" is the Kong
# image itself plus that toolchain and a C linker: `luarocks make` runs the
# rockspec's build_command there (`cargo build --release --locked`, then the
# copy to auth_router_native.so), so the .so is built against the very glibc
# and LuaJIT it will run with. The installed rock is then packed as a binary
# rock, and the final image installs that: Kong with the plugin and no
# compiler.

ARG KONG_IMAGE=kong:3.9
# Any Rust >= 1.88 (Cargo.toml rust-version).
ARG RUST_IMAGE=rust:1-slim-bookworm

FROM ${RUST_IMAGE} AS rust


FROM ${KONG_IMAGE} AS build
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev ca-certificates zip unzip \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo  /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH

WORKDIR /src
# What the rockspec builds and installs (no target/, no local .so). A path
# that Cargo.toml comes to name (build.rs, [[bench]] files) must be added here.
COPY Cargo.toml Cargo.lock kong-plugin-auth-router-0.1.0-1.rockspec ./
COPY src/ src/
COPY benches/ benches/
COPY lua/ lua/
RUN luarocks make kong-plugin-auth-router-0.1.0-1.rockspec \
 && luarocks pack kong-plugin-auth-router 0.1.0-1 \
 && mkdir /rock && mv kong-plugin-auth-router-0.1.0-1.*.rock /rock/


FROM ${KONG_IMAGE}
USER root
COPY --from=build /rock/ /tmp/rock/
# luarocks unpacks a .rock with unzip; install it only if the image lacks it.
RUN if ! command -v unzip >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends unzip \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && luarocks install /tmp/rock/kong-plugin-auth-router-0.1.0-1.*.rock \
 && rm -rf /tmp/rock
USER kong
ENV KONG_PLUGINS=bundled,auth-router
