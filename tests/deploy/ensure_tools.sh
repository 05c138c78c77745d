#!/usr/bin/env bash
# Installs what tests/deploy needs from Debian: promtool + prometheus (package prometheus) and
# alertmanager (prometheus-alertmanager). Idempotent; fails loudly when it cannot install.
set -euo pipefail
need=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
else
  echo "tests/deploy needs Debian packages: ${need[*]}. Install them as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} (Debian) for tests/deploy" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the Debian packages may start their services where an init system runs: tests start their own
for service in prometheus prometheus-alertmanager; do
  "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
done
command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || {
  echo "installed ${need[*]} but promtool/prometheus-alertmanager are still missing" >&2; exit 1; }
