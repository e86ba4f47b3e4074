# syntax=docker/dockerfile:1
#
# Multi-stage build of the `hookstream` binary.
#   docker build -t hookstream .
# (compose/docker-compose.yml builds it with context `..`)

# ---- builder -----------------------------------------------------------------
FROM rust:1-bookworm AS builder

# libclang-dev: bindgen for the RocksDB bindings; cmake: librdkafka's build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cargo registry and target dir are BuildKit cache mounts, so the binary is
# copied out of target/ inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hookstream \
    && install -m 0755 target/release/hookstream /usr/local/bin/hookstream

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to brokers and webhook endpoints;
# curl: used only by the compose healthcheck (GET /readyz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# Non-root user. /var/lib/hookstream is the processor's RocksDB state dir; it is
# created here so a named volume mounted over it inherits this ownership.
RUN groupadd --system --gid 10001 hookstream \
    && useradd --system --uid 10001 --gid hookstream --home-dir /var/lib/hookstream \
       --shell /usr/sbin/nologin hookstream \
    && install -d -o hookstream -g hookstream -m 0750 /var/lib/hookstream \
    && install -d -m 0755 /etc/hookstream

COPY --from=builder /usr/local/bin/hookstream /usr/local/bin/hookstream

USER hookstream:hookstream
WORKDIR /var/lib/hookstream
EXPOSE 8080

ENTRYPOINT ["hookstream"]
CMD ["--help"]
