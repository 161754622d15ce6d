#!/usr/bin/env bash
# Installs every build, test and run dependency of drfm from Debian 12 packages.
# Idempotent; run as root (or with sudo available). Downloads nothing but Debian packages.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libeigen3-dev libabsl-dev
  libgrpc++-dev libgrpc-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libsqlite3-dev zlib1g-dev libssl-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  python3 python3-grpcio python3-protobuf python3-numpy
  prometheus
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
