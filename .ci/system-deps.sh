#!/usr/bin/env bash
# Debian packages the UI and deploy tests need (tests/ui, tests/deploy):
#   chromium          headless browser driven by Python playwright (executable /usr/bin/chromium)
#   fonts-liberation  text in the screenshots (a chromium "Recommends", which we do not pull in)
#   postgresql        initdb / pg_ctl for the PostgreSQL-backed Dagster instance test
#   redis-server      the Celery broker of the distributed tests (tests/deploy/test_celery.py)
# Idempotent: packages already installed are skipped, and `apt-get update` runs at most once,
# only when something is missing. Quiet unless it fails.
set -euo pipefail

PACKAGES=(chromium fonts-liberation postgresql redis-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "system-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

echo "system-deps: installing ${missing[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq \
       && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "system-deps: apt-get failed for: ${missing[*]}" >&2
    exit 1
fi

# The tests run their own server from initdb; the packaged cluster (if the postinst created one)
# is left as the package made it.
test -x /usr/bin/chromium || { echo "system-deps: /usr/bin/chromium missing after install" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || { echo "system-deps: initdb missing after install" >&2; exit 1; }
test -x /usr/bin/redis-server || { echo "system-deps: /usr/bin/redis-server missing after install" >&2; exit 1; }
echo "system-deps: done"
