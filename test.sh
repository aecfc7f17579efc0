#!/usr/bin/env bash
# One command: install what the tests need (Debian packages when missing, a virtualenv with
# the project and its test extras), then run the whole suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v sipp >/dev/null || need_apt+=(sip-tester)
command -v baresip >/dev/null || need_apt+=(baresip-core)  # softphones (`baresip` adds GUI, video)
command -v chromium >/dev/null || need_apt+=(chromium)  # the ops page, in a real browser
command -v socat >/dev/null || need_apt+=(socat)  # SIP over TLS: a TLS bridge for the Debian SIPp (no TLS)
command -v openssl >/dev/null || need_apt+=(openssl)  # test certificates
need_rtpengine=0
command -v rtpengine >/dev/null || need_rtpengine=1  # the second media backend
need_kamailio=0  # a record-routing proxy in front of the relay (issue 18); in /usr/sbin
command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || need_kamailio=1
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ] || [ "$need_rtpengine" = 1 ] || [ "$need_kamailio" = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if [ ${#need_apt[@]} -gt 0 ]; then
      echo "test.sh: please install: ${need_apt[*]} (or run as root)" >&2
      exit 1
    fi
    need_rtpengine=0  # optional: its tests skip without it
    need_kamailio=0  # likewise
  fi
fi
if [ ${#need_apt[@]} -gt 0 ] || [ "$need_rtpengine" = 1 ] || [ "$need_kamailio" = 1 ]; then
  echo "test.sh: installing ${need_apt[*]} $([ "$need_rtpengine" = 1 ] && echo rtpengine-daemon)" \
    "$([ "$need_kamailio" = 1 ] && echo kamailio)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#need_apt[@]} -eq 0 ] || apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # rtpengine's recommends would try to build its kernel module: userspace is enough here.
  [ "$need_rtpengine" = 0 ] || apt-get install -y -qq --no-install-recommends rtpengine-daemon \
    >/dev/null || echo "test.sh: rtpengine-daemon unavailable; its tests will be skipped"
  [ "$need_kamailio" = 0 ] || apt-get install -y -qq kamailio >/dev/null \
    || echo "test.sh: kamailio unavailable; its tests will be skipped"
  # redis-server's and kamailio's packages start system services; the tests start their own.
fi
# Kannel (bearerbox + smsbox): a real SMS gateway for the SMPP tests (issue 17); optional,
# its test skips without it. Its package may start a system service on 13000-13013; the
# test starts its own boxes on free ports.
if ! command -v bearerbox >/dev/null && [ ! -x /usr/sbin/bearerbox ] && [ "$(id -u)" -eq 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel \
         >/dev/null; }; } || echo "test.sh: kannel unavailable; its test will be skipped"
fi
# dnsmasq: a real DNS server for the RFC 3263 resolver test (issue 18); optional, the test
# skips without it. dnsmasq-base is the binary alone, without a system service.
if ! command -v dnsmasq >/dev/null && [ ! -x /usr/sbin/dnsmasq ] && [ "$(id -u)" -eq 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         dnsmasq-base >/dev/null; }; } || echo "test.sh: dnsmasq unavailable; its test will be skipped"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,plots]'
# The suite starts Python children hundreds of times (`relay serve`, the CLI verbs, worker
# processes). Compile the project once here: where PYTHONDONTWRITEBYTECODE is set, no child
# caches what it compiles, and each one would compile the whole relay again (~0.25 s of CPU).
.venv/bin/python -m compileall -q -j 0 relay dialplan recordings loadtest >/dev/null

exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
