#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a Debian/Ubuntu machine:
# system packages (victoria-metrics, chromium, redis-server) when missing, and a
# virtualenv in .venv with the Python packages pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: FleetDeck needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv; then
    echo "setup: python venv module missing; installing python3-venv" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y -q python3-venv
    "$python" -m venv .venv
  fi
fi
stamp=.venv/.fleetdeck-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  touch "$stamp"
fi
