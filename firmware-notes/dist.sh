#!/usr/bin/env bash
# Builds the cunyun-node Debian package (村云节点安装包) into $CARGO_TARGET_DIR/dist/ (default
# target/dist/) with a .sha256 beside it, using only dpkg-deb (no cargo-deb to install).
#
#   bash firmware-notes/dist.sh                       # amd64, release build
#   bash firmware-notes/dist.sh amd64 --binary PATH   # package an already built binary
#
# The package: /usr/bin/cunyun-node, the systemd unit (Type=notify, WatchdogSec, MemoryMax),
# /etc/cunyun/node.toml (a conffile), /var/lib/cunyun/ and the `cunyun` system user (made by
# postinst), the zh-CN guides in /usr/share/doc/cunyun-node/. Tested by
# firmware-notes/test-deb.sh. Cross targets (aarch64) are issue 15 item 1, not built here yet.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-amd64}"
shift || true
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    *) echo "未知参数：$1" >&2; exit 2 ;;
  esac
done
case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu; strip=strip ;;
  *) echo "暂不支持的架构：$arch（目前只有 amd64；aarch64 见 issue 15 第 1 项）" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
if [ -z "$binary" ]; then
  cargo build --release -p cunyun-node --target "$triple"
  binary="$target_dir/$triple/release/cunyun-node"
fi
[ -x "$binary" ] || { echo "找不到可执行文件：$binary" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "Cargo.toml 中没有 workspace 版本号" >&2; exit 1; }

dist="$target_dir/dist"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
pkg="$root/cunyun-node"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/cunyun" \
  "$pkg/var/lib/cunyun" "$pkg/usr/share/doc/cunyun-node"
install -m 0755 "$binary" "$pkg/usr/bin/cunyun-node"
if command -v "$strip" >/dev/null 2>&1; then
  "$strip" --strip-debug "$pkg/usr/bin/cunyun-node"
fi
install -m 0644 firmware-notes/cunyun-node.service "$pkg/lib/systemd/system/cunyun-node.service"
install -m 0640 firmware-notes/deb/node.toml "$pkg/etc/cunyun/node.toml"
for doc in install-guide.md enrollment.md storage-and-power-loss.md node.example.toml; do
  install -m 0644 "firmware-notes/$doc" "$pkg/usr/share/doc/cunyun-node/$doc"
done
for script in postinst prerm postrm; do
  install -m 0755 "firmware-notes/deb/$script" "$pkg/DEBIAN/$script"
done
echo "/etc/cunyun/node.toml" > "$pkg/DEBIAN/conffiles"
size_kb="$(du -sk "$pkg" | cut -f1)"
# The glibc floor: the newest GLIBC_x.y symbol version the binary needs.
glibc="$(objdump -T "$pkg/usr/bin/cunyun-node" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1 || true)"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: cunyun-node
Version: $version
Architecture: $arch
Maintainer: cunyun project <cunyun@invalid>
Section: net
Priority: optional
Installed-Size: $size_kb
Depends: libc6 (>= ${glibc:-2.31}), adduser
Homepage: file:///usr/share/doc/cunyun-node/install-guide.md
Description: cunyun village/county node (村云节点)
 Offline-first record keeping and sync for village committees and county
 science associations: HTTP API and cadre web app on 8080 (https 8443), sync
 over mutual TLS on 7447, enrollment on 7448, mDNS discovery on 5353/udp.
CONTROL
mkdir -p "$dist"
deb="$dist/cunyun-node_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
(cd "$dist" && sha256sum "$(basename "$deb")" > "$(basename "$deb").sha256")
echo "$deb"
