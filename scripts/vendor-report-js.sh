#!/usr/bin/env bash
# Vendors the plotting library the HTML report inlines (`lem report`): uPlot (MIT) from
# npm. Downloads the package tarball with `npm pack`, checks its SHA-256 against the one
# recorded here, and copies the minified script, its stylesheet and its LICENSE to
# coordinator/assets/uplot/. The copies are committed; the build never downloads.
# To update: change VERSION, run with EXPECTED_SHA256 unset to print the new hash,
# review the package, then record the hash here.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="1.6.32"
EXPECTED_SHA256="${EXPECTED_SHA256-4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d}"
DEST="coordinator/assets/uplot"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null)
tarball="$work/uplot-$VERSION.tgz"
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ -z "$EXPECTED_SHA256" ]; then
    echo "uplot-$VERSION.tgz sha256 $actual (not checked: EXPECTED_SHA256 is empty)" >&2
    exit 1
fi
if [ "$actual" != "$EXPECTED_SHA256" ]; then
    echo "uplot-$VERSION.tgz: sha256 $actual, expected $EXPECTED_SHA256" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work"
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$work/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$work/package/LICENSE" "$DEST/LICENSE"
echo "uplot $VERSION (sha256 $actual) → $DEST"
