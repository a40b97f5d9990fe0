#!/usr/bin/env bash
# Checks the cunyun-node package that dist.sh builds: control fields, file list and modes,
# conffiles, maintainer scripts (sh -n), and `systemd-analyze verify` of the unit.
#   bash firmware-notes/test-deb.sh [BINARY]   # default: the debug build of cunyun-node
# Prints "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
binary="${1:-$target_dir/debug/cunyun-node}"
if [ ! -x "$binary" ]; then
  cargo build -p cunyun-node || exit 1
fi
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { local what="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

deb="$(bash firmware-notes/dist.sh amd64 --binary "$binary" | tail -1)"
check "package built: $deb" test -f "$deb"
check "sha256 matches" bash -c "cd '$(dirname "$deb")' && sha256sum -c '$(basename "$deb").sha256'"
info="$(dpkg-deb --info "$deb")"
contents="$(dpkg-deb --contents "$deb")"
for field in "Package: cunyun-node" "Architecture: amd64" "Depends: libc6 (>= " "adduser"; do
  check "control has '$field'" grep -qF "$field" <<<"$info"
done
for script in postinst prerm postrm conffiles; do
  check "control.tar has $script" grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +(\\* +)?$script( |\$)" <<<"$info"
done
for path in ./usr/bin/cunyun-node ./lib/systemd/system/cunyun-node.service ./etc/cunyun/node.toml \
  ./var/lib/cunyun/ ./usr/share/doc/cunyun-node/install-guide.md; do
  check "contains $path" grep -qE " ${path//./\\.}\$" <<<"$contents"
done
check "binary is root:root 0755" grep -qE '^-rwxr-xr-x root/root .* \./usr/bin/cunyun-node$' <<<"$contents"
check "config is not world-readable" grep -qE '^-rw-r----- root/root .* \./etc/cunyun/node\.toml$' <<<"$contents"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/DEBIAN"
check "conffiles lists /etc/cunyun/node.toml" grep -qx /etc/cunyun/node.toml "$work/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  check "$script is executable" test -x "$work/DEBIAN/$script"
  check "$script parses (sh -n)" sh -n "$work/DEBIAN/$script"
done
check "postinst creates the cunyun system user" grep -q "adduser --system" "$work/DEBIAN/postinst"
check "the packaged binary runs" "$work/root/usr/bin/cunyun-node" --version
unit="$work/root/lib/systemd/system/cunyun-node.service"
for key in "Type=notify" "WatchdogSec=" "MemoryMax=" "User=cunyun" "StateDirectory=cunyun" \
  "ExecStart=/usr/bin/cunyun-node run --config /etc/cunyun/node.toml"; do
  check "unit has $key" grep -q "^$key" "$unit"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify needs ExecStart's binary to exist: point it at the extracted one.
  mkdir -p "$work/units"
  sed "s#/usr/bin/cunyun-node#$work/root/usr/bin/cunyun-node#" "$unit" > "$work/units/cunyun-node.service"
  if out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$work/units/cunyun-node.service" 2>&1)" \
    && ! grep -q "cunyun-node.service" <<<"$out"; then
    ok "systemd-analyze verify"
  else
    bad "systemd-analyze verify: $out"
  fi
else
  echo "skip systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
