# drfm-server (and the drfm CLI) on Debian 12, in two stages: `build` compiles with the project's
# own scripts/install-deps.sh and CMake for a portable x86-64 baseline (DRFM_NATIVE=OFF), the
# runtime stage holds only the shared libraries the binaries load, the Fashion-MNIST package and
# the binaries, and runs as an unprivileged user.
#
#   docker build -t drfm .        (here, without a Docker engine: ../shared/tools/container.sh build)
#   docker run -p 50051:50051 -p 9464:9464 -v drfm-data:/var/lib/drfm drfm [--workers 2 ...]
#
# Arguments after the image name are appended to the server's flags (drfm-server --help lists
# them). deploy/test-image.sh builds this image and runs a fit against it.

ARG DEBIAN_IMAGE=debian:bookworm

FROM ${DEBIAN_IMAGE} AS build
# 1: the image fails to build when the CLI (client/main.cc) does not compile; 0: the image then
# ships the server alone (with a warning in the build log).
ARG DRFM_REQUIRE_CLI=1
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# Dependencies first, in their own layer, so a source change does not reinstall them.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DDRFM_NATIVE=OFF -DDRFM_BUILD_TESTS=OFF -DDRFM_BUILD_BENCH=OFF \
 && cmake --build build -j "$(nproc)" --target drfm-server \
 && if [ -f client/main.cc ]; then \
      cmake --build build -j "$(nproc)" --target drfm \
      || { [ "$DRFM_REQUIRE_CLI" = 0 ] && echo "WARNING: the drfm CLI did not build; the image ships the server only"; }; \
    fi \
 && mkdir -p /out/bin \
 && cp build/bin/drfm-server /out/bin/ \
 && if [ -x build/bin/drfm ]; then cp build/bin/drfm /out/bin/; fi \
 && strip --strip-unneeded /out/bin/* \
 && mkdir -p /out/share/drfm && cp -r proto /out/share/drfm/proto \
 && rm -rf build

FROM ${DEBIAN_IMAGE}
ARG DRFM_UID=10001
# The runtime libraries of what drfm-server and drfm link (ldd), by their Debian 12 package names:
# gRPC C++ (with reflection; pulls libgrpc29, c-ares, re2), protobuf, abseil, prometheus-cpp core
# and pull (pulls civetweb), SQLite, zlib, OpenSSL, GCC's OpenMP; tini as PID 1 (forwards SIGTERM,
# reaps children); the Fashion-MNIST package for the built-in fashion-mnist:train|test datasets.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libsqlite3-0 zlib1g libssl3 libgomp1 \
      ca-certificates tini \
      dataset-fashion-mnist \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/* /var/log/apt/* /var/log/dpkg.log \
 && groupadd --gid "$DRFM_UID" drfm \
 && useradd --uid "$DRFM_UID" --gid drfm --home-dir /var/lib/drfm --no-create-home \
      --shell /usr/sbin/nologin drfm \
 && mkdir -p /var/lib/drfm \
 && chown drfm:drfm /var/lib/drfm \
 && chmod 0750 /var/lib/drfm

# The server always, the CLI when it was built (the whole /out/bin folder, so no COPY names a file
# that may be missing); the .proto files for other-language clients.
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/share/ /usr/local/share/

LABEL org.opencontainers.image.title="drfm" \
      org.opencontainers.image.description="gRPC service for Deep Recursive Feature Machine experiments"

USER ${DRFM_UID}:${DRFM_UID}
WORKDIR /var/lib/drfm
# The embedded store (SQLite + files): keep it on a volume.
VOLUME ["/var/lib/drfm"]
# 50051: gRPC (all services, grpc.health.v1.Health, reflection); 9464: Prometheus /metrics.
EXPOSE 50051 9464

# Docker-format images only (OCI images ignore it; Kubernetes uses its own gRPC probes): the CLI's
# health check when the CLI is in the image.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD [ ! -x /usr/local/bin/drfm ] || drfm --server 127.0.0.1:50051 --timeout 5 health

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/drfm-server", \
            "--listen", "0.0.0.0:50051", \
            "--metrics-listen", "0.0.0.0:9464", \
            "--data-dir", "/var/lib/drfm"]
CMD []
