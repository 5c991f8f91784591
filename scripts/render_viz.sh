#!/usr/bin/env bash
# Render the project's kedro-viz static site headless to a PNG, e.g. for a quick look in CI.
#
#   scripts/render_viz.sh [OUT_PNG] [BUILD_DIR] [PIPELINE]     (run from the project root)
#
# PIPELINE (default __default__) is the named pipeline to show, e.g. explanation.
# Builds the site with `kedro viz build` when BUILD_DIR (default: build) has none, serves it
# on a free local port (its own process group, started with setsid and killed as a group on
# exit), and screenshots it with headless Chromium. Exit status 3: no Chromium found
# (`apt-get install -y chromium`, or set CHROMIUM=/path/to/chrome).
set -euo pipefail

out=${1:-build/viz.png}
build=${2:-build}
pipeline=${3:-__default__}
python=${PYTHON:-$(command -v python3 || command -v python)}
kedro=${KEDRO:-$(dirname "$python")/kedro}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
export KEDRO_DISABLE_TELEMETRY=true

if [[ -z "$chromium" ]]; then
  echo "render_viz.sh: no chromium found (apt-get install -y chromium, or set CHROMIUM)" >&2
  exit 3
fi
if [[ ! -f "$build/index.html" ]]; then
  [[ -x "$kedro" ]] || kedro=kedro
  "$kedro" viz build >&2
fi

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Without job control a background job is not a group leader, so setsid runs the server as
# the leader of a new process group whose id is $!.
setsid "$python" -m http.server "$port" --bind 127.0.0.1 --directory "$build" >/dev/null 2>&1 &
server=$!
trap 'kill -- -"$server" 2>/dev/null || true' EXIT

for _ in $(seq 50); do
  if "$python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/api/main', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.2
done

mkdir -p "$(dirname "$out")"
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --disable-dev-shm-usage --window-size=1400,900 --virtual-time-budget=15000 \
  --screenshot="$out" "http://127.0.0.1:$port/?pid=$pipeline" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "render_viz.sh: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
