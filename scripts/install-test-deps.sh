#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks use, when missing:
# skopeo, podman, buildah, umoci (real clients), docker-registry (distribution 2.8, for compatibility tests),
# wrk/hey (load), nginx (static-file ceiling in benchmarks), redis-server (the blob-descriptor cache; the tests start
# their own on a loopback port, and stop the one the package starts at install), openssl (test certificates),
# strace (the durability test checks the order of fsync, rename and the acknowledgement), curl (the benchmark's
# pulls).
set -euo pipefail
need=()
for pair in skopeo:skopeo podman:podman buildah:buildah umoci:umoci docker-registry:docker-registry wrk:wrk hey:hey nginx:nginx-light redis-server:redis-server openssl:openssl strace:strace curl:curl; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The package starts a system redis on :6379 where there is an init system; the tests do not use it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  ${SUDO:-} systemctl stop redis-server || true
fi
