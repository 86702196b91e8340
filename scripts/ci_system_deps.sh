#!/usr/bin/env bash
# System packages the test suite needs beyond the Python venv.
#   chromium: the MLflow UI browser test (tests/test_mlflow_ui_browser.py) drives Debian's
#             Chromium through Playwright, because Playwright's own browser download is not
#             reachable from CI.
#   fonts-liberation: so the screenshot has readable text (Chromium's fallback font set).
# Idempotent and quiet: does nothing when everything is already installed.
set -euo pipefail

packages=(chromium fonts-liberation)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "ci_system_deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
    fi
else
    SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    echo "ci_system_deps.sh: apt-get failed installing ${missing[*]}:" >&2
    tail -n 30 "$log" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
echo "ci_system_deps.sh: installed ${missing[*]}"
