#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg -i, and checks what it
# installed: the binary, the plugins, the system user, the unit (systemd-analyze
# verify), and `switchyard check` on the installed config. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo build --release --quiet
deb=$(cargo deb -p switchyard --no-build 2>/dev/null | tail -1)
echo "built $deb"
dpkg -i "$deb"
test -x /usr/bin/switchyard
ls /usr/lib/switchyard/plugins/libswitchyard_tight.so /usr/lib/switchyard/plugins/libswitchyard_email.so >/dev/null
getent passwd switchyard >/dev/null || { echo "no switchyard user after install" >&2; exit 1; }
dpkg-query -W -f='${Conffiles}\n' switchyard | grep -q /etc/switchyard/switchyard.toml
systemd-analyze verify /usr/lib/systemd/system/switchyard.service
switchyard check --config /etc/switchyard/switchyard.toml
echo "package: installed and checked"
