#!/usr/bin/env bash
# What the real Debian media set (thud_mt/corpus/debian.py, the tests marked
# `debian`) needs before the tests run. The packages themselves are fetched by
# the tests' session fixture into $THUD_CACHE/debian (or ~/.cache/thud-mt/debian)
# with `apt-get download`; here apt is only made ready to serve them.
set -euo pipefail

# Keep in step with CATALOGUE in thud_mt/corpus/debian_catalog.py (a test checks).
PACKAGES="lugaru-data minetest-data scratch sonic-pi-samples renpy-demo"

for tool in apt-get apt-cache dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    echo "debian-deps: $tool not found; the tests marked 'debian' need a Debian or Ubuntu system" >&2
    exit 1
  fi
done

# apt-get download only finds packages the local lists know: refresh them once
# if any is unknown (a fresh machine may have no lists at all).
for package in $PACKAGES; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    apt-get update -qq
    break
  fi
done
for package in $PACKAGES; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    echo "debian-deps: apt does not know the package $package even after apt-get update" >&2
    exit 1
  fi
done
