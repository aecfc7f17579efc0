#!/usr/bin/env bash
# One command: create the virtualenv, install the relay, and run it on the embedded default
# (SQLite in ./var/relay.db, recordings in ./var/recordings, everything on 127.0.0.1).
# Extra arguments go to `relay serve` (e.g. --http 127.0.0.1:9090).
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "serve.sh: please install python3-venv first (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec .venv/bin/relay serve "$@"
