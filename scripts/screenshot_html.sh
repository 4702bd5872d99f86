#!/usr/bin/env bash
# Renders an HTML report with headless Chromium into a PNG (issue #15: look at it in a real
# browser). Needs Debian's `chromium` package (apt-get install -y chromium); no network is used:
# the report is self-contained and every background service of Chromium is switched off.
#
#   scripts/screenshot_html.sh REPORT.html OUT.png [WIDTH,HEIGHT]
#   scripts/screenshot_html.sh --demo OUT.png      # diff the demo pair first (target/debug)
set -euo pipefail

usage() { echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT] | $0 --demo OUT.png [WIDTH,HEIGHT]" >&2; exit 2; }
[ $# -ge 2 ] || usage
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$1" = "--demo" ]; then
    bin=${DIVERGENCE:-${CARGO_TARGET_DIR:-$root/target}/debug/divergence}
    [ -x "$bin" ] || { echo "error: $bin: not built (cargo build -p divergence-cli, or set DIVERGENCE)" >&2; exit 2; }
    html=$tmp/demo-report.html
    # Exit code 1 (the demo diverges) is expected.
    (cd "$root" && "$bin" diff fixtures/demo/ours.npz fixtures/demo/ref.npz --format html > "$html") || [ $? -eq 1 ]
else
    html=$1
fi
out=$2
size=${3:-1400,2400}
[ -f "$html" ] || { echo "error: $html: no such file" >&2; exit 2; }

browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }

abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
case "$out" in /*) ;; *) out=$PWD/$out ;; esac
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$tmp/profile" --window-size="$size" \
    --screenshot="$out" "file://$abs" 2> "$tmp/chromium.log" || {
    echo "error: chromium failed:" >&2; tail -5 "$tmp/chromium.log" >&2; exit 2; }
[ -s "$out" ] || { echo "error: $out: chromium wrote no screenshot" >&2; exit 2; }
echo "$out"
