#!/usr/bin/env bash
# Install the test extras (and, when run as root, the system packages for a virtual
# screen) and run the whole test suite: lint, types (mypy, the core), docs build, core + widget tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SYS_PKGS="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libdbus-1-3
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libfontconfig1 libglib2.0-0"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for p in $SYS_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "installing system packages:$missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
bash tools/install.sh test
"$PY" -m ruff check src tests benchmarks docs
"$PY" -m ruff format --check src tests benchmarks docs
"$PY" -m mypy  # the core (files and exclusions in pyproject.toml's [tool.mypy])
"$PY" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
export QT_API=pyqt6 PYTHONFAULTHANDLER=1
if command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" "$PY" -m pytest "$@"
else
  echo "no xvfb-run: running without the widget tests (install xvfb to run them)" >&2
  exec "$PY" -m pytest -m "not gui" "$@"
fi
