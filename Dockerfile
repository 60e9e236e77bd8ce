# syntax=docker/dockerfile:1
# firstmile: one image for every role (`firstmile <command>`).

FROM rust:1-bookworm AS build
# Bundled librdkafka: cmake and the headers of the system libraries it links.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev libcurl4-openssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p firstmile \
 && cp target/release/firstmile /usr/local/bin/firstmile

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /etc/firstmile --shell /usr/sbin/nologin firstmile
COPY --from=build /usr/local/bin/firstmile /usr/local/bin/firstmile
# The example configuration and topic declarations; mount your own over them.
COPY firstmile.toml /etc/firstmile/firstmile.toml
COPY topics /etc/firstmile/topics
# The example enrichment data the example configuration points at (MaxMind's
# test databases, a sample asset table and indicator list): mount real ones.
COPY tests/data/geoip /etc/firstmile/tests/data/geoip
COPY tests/data/enrich /etc/firstmile/tests/data/enrich
WORKDIR /etc/firstmile
USER firstmile
ENV FIRSTMILE_CONFIG=/etc/firstmile/firstmile.toml \
    FIRSTMILE_LOG_FORMAT=json
ENTRYPOINT ["firstmile"]
CMD ["--help"]
