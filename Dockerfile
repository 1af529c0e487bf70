# syntax=docker/dockerfile:1
# The image deploy/charts/revplane runs by default: the `revplane` binary on a minimal,
# non-root runtime (distroless: no shell, no package manager; uid/gid 65532).
#
#   docker build -t revplane:0.1.0 .
#
# Not built on the project's own machines: they have no container engine and cannot pull
# base images. The tests run the same binary directly (`cargo build --release --locked`).

# Builder on Debian 12, so the binary's glibc matches the runtime's (distroless cc-debian12).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# What `cargo build` reads; everything else stays out (.dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin revplane \
    && cp target/release/revplane /revplane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /revplane /usr/local/bin/revplane
USER 65532:65532
# xDS gRPC, admin HTTP (/ready, /healthz, /metrics), injection webhook (HTTPS).
EXPOSE 15010 15014 15017
ENTRYPOINT ["/usr/local/bin/revplane"]
CMD ["--help"]
