#!/usr/bin/env bash
# Debian's Chromium (and a colour emoji font, so 👍 👎 🔄 render) for the playground's browser
# test. Idempotent and quiet: does nothing when both are installed. Browser downloads by
# Playwright do not work here; the test drives /usr/bin/chromium instead. When apt-get cannot
# run (not root, no network), the browser test skips and says why.
set -uo pipefail

need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || need+=(fonts-noto-color-emoji)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-browser: missing ${need[*]} and cannot apt-get here; the browser test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get install -y -q "${need[@]}" >"$log" 2>&1; then
  apt-get update -q >>"$log" 2>&1
  if ! apt-get install -y -q "${need[@]}" >>"$log" 2>&1; then
    echo "ensure-browser: apt-get install ${need[*]} failed; the browser test will skip:" >&2
    tail -5 "$log" >&2
  fi
fi
rm -f "$log"
exit 0
