# syntax=docker/dockerfile:1
#
# Container image of the `identity` gRPC service.
#
#   docker build -t identity .
#   docker run --rm -p 50051:50051 identity                   # SQLite in the data dir
#   docker run --rm identity keygen > signing_key.pem         # a new Ed25519 signing key
#
# Builder: the official Rust image on Debian 12, so that the binary links against the same glibc
# as the distroless runtime below. No protoc and no database are needed at build time: build.rs
# compiles proto/ with protox (pure Rust) and sqlx::migrate! embeds migrations/ into the binary.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# 1. Dependencies only, in their own layer: manifests, build script and protos, with stand-in
#    sources. This layer is rebuilt only when Cargo.toml, Cargo.lock, build.rs or proto/ change.
#    The crates.io download cache is a BuildKit cache mount, shared between builds.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
# Cargo.toml names the load bench explicitly, so its file must exist for the manifest to load.
COPY benches ./benches
# The workspace's other member (the client library) is never built here, but cargo loads every
# member's manifest: its Cargo.toml, its build script and a stand-in lib.rs are enough (its
# bench and example name their paths explicitly, so their files need not exist).
COPY identity-client/Cargo.toml identity-client/build.rs ./identity-client/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    mkdir -p src identity-client/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs identity-client/src/lib.rs \
    && cargo build --release --locked --bin identity

# 2. The service itself. COPY keeps the files' original timestamps, which can be older than the
#    stand-in build above, so touch them to make cargo rebuild the crate (and re-embed migrations).
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin identity \
    && install -D -m 0755 target/release/identity /out/usr/local/bin/identity \
    && install -d -m 0700 -o 65532 -g 65532 /out/var/lib/identity

# Runtime: distroless glibc + libgcc + CA certificates, no shell, no package manager; runs as
# nonroot (65532). The root filesystem can be mounted read-only: the process writes only to
# IDENTITY_DATA_DIR (the SQLite database and a generated signing key, when neither Postgres nor
# IDENTITY_SIGNING_KEY_FILE is configured). Give it a volume, an emptyDir or a tmpfs there.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="identity" \
      org.opencontainers.image.description="A standalone identity microservice served over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/identity /usr/local/bin/identity
# Distroless has no shell to mkdir/chown at run time: the data dir is made in the builder, owned
# by nonroot with mode 0700, and copied in as the `identity` entry of /var/lib.
COPY --from=builder --chown=65532:65532 /out/var/lib/ /var/lib/

ENV IDENTITY_LISTEN_ADDR=0.0.0.0:50051 \
    IDENTITY_DATA_DIR=/var/lib/identity \
    IDENTITY_LOG_FORMAT=json

VOLUME ["/var/lib/identity"]

# 50051: gRPC (API, grpc.health.v1, reflection).
# 9090: Prometheus /metrics, served only when IDENTITY_METRICS_ADDR is set (e.g. 0.0.0.0:9090).
# 8080: /.well-known/jwks.json and openid-configuration, only when IDENTITY_HTTP_ADDR is set.
EXPOSE 50051 9090 8080

# Numeric, so that Kubernetes' runAsNonRoot can verify it without resolving a user name.
USER 65532:65532

# `identity healthcheck` dials IDENTITY_LISTEN_ADDR (a wildcard IP replaced by 127.0.0.1) and
# exits 0 only if grpc.health.v1 answers SERVING. Exec form: there is no shell in this image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/identity", "healthcheck"]

# On SIGTERM the server reports NOT_SERVING, stops accepting connections, drains in-flight RPCs
# (each is bounded at 30 s) and exits 0.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/identity"]
CMD ["serve"]
