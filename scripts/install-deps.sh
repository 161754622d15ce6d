#!/usr/bin/env bash
# Installs every build, test and run dependency of drfm from Debian 12 packages.
# Idempotent; run as root (or with sudo available). Downloads nothing but Debian packages.
#   install-deps.sh               everything (what the README's commands need)
#   install-deps.sh --build-only  only what compiling drfm needs (no tests, benchmarks, Python,
#                                 Prometheus or data set), e.g. the Dockerfile's build stage;
#                                 DRFM_DEPS=build does the same
set -euo pipefail
profile=${DRFM_DEPS:-all}
for arg in "$@"; do
  case "$arg" in
    --build-only) profile=build ;;
    *) echo "install-deps.sh: unknown argument '$arg' (allowed: --build-only)" >&2; exit 2 ;;
  esac
done
case "$profile" in all|build) ;; *) echo "install-deps.sh: DRFM_DEPS must be all or build" >&2; exit 2 ;; esac
PKGS=(
  build-essential cmake ninja-build pkg-config ca-certificates
  libeigen3-dev libabsl-dev
  libgrpc++-dev libgrpc-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libsqlite3-dev zlib1g-dev libssl-dev
  nlohmann-json3-dev libcli11-dev
)
if [ "$profile" = all ]; then
  PKGS+=(
    git
    libgtest-dev libgmock-dev libbenchmark-dev
    dataset-fashion-mnist
    python3 python3-grpcio python3-protobuf python3-numpy
    prometheus
    # The ThreadSanitizer run (scripts/sanitize.sh tsan) builds with clang (its TSan runtime is in
    # libclang-rt-14-dev, llvm-symbolizer in llvm-14) and LLVM's OpenMP runtime, whose libarcher
    # tells TSan about OpenMP synchronization. GCC's ASan/UBSan runtimes come with g++.
    clang libclang-rt-14-dev llvm-14 libomp-dev
  )
  # Node.js and npm run the offline Kubernetes manifest validation (deploy/k8s/validate.sh); a
  # machine that already has a Node.js keeps it.
  command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
