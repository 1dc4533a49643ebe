#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg -i, and checks what it
# installed: the binary, the plugins, the ABI header, the system user, the units
# (systemd-analyze verify), and `switchyard check` on the installed config;
# then builds plugins outside the repository as plugin-api/README.md says (C
# against the installed header, Rust against plugin-api by path) and checks
# that the installed switchyard loads them. Run as root.
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
systemd-analyze verify /usr/lib/systemd/system/switchyard.service \
    /usr/lib/systemd/system/switchyard.socket /usr/lib/systemd/system/switchyard-admin.socket
switchyard check --config /etc/switchyard/switchyard.toml
# Upgrades restart the service, not its socket (which would refuse connections).
grep -q 'try-restart switchyard.service' /var/lib/dpkg/info/switchyard.postinst
if grep 'switchyard\.socket' /var/lib/dpkg/info/switchyard.postinst | grep -E 'restart|stop'; then
    echo "an upgrade would restart or stop switchyard.socket" >&2; exit 1
fi
test -f /usr/include/switchyard/switchyard_plugin.h

# Plugins built elsewhere, as plugin-api/README.md shows.
repo=$(pwd)
away=$(mktemp -d)
trap 'rm -rf "$away"' EXIT
mkdir -p "$away/plugins" "$away/rules" "$away/data" "$away/my-provider/src"
cc -std=c11 -O2 -Wall -Werror -shared -fPIC -I/usr/include/switchyard \
   -o "$away/plugins/libswitchyard_c_example.so" plugins/c-example/token_provider.c
cat > "$away/my-provider/Cargo.toml" <<TOML
[package]
name = "my-provider"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-plugin-api = { path = "$repo/plugin-api" }
serde_json = "1"

[workspace]
TOML
# The provider of plugin-api/README.md, as written there.
awk '/^## A provider in Rust/ {on=1; next} on && /^```rust/ {code=1; next} code && /^```/ {exit} code {print}' \
    plugin-api/README.md > "$away/my-provider/src/lib.rs"
(cd "$away/my-provider" && CARGO_TARGET_DIR="$away/target" cargo build --release --quiet)
cp "$away/target/release/libmy_provider.so" "$away/plugins/"
cat > "$away/switchyard.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "data"
plugin_dir = "plugins"
rules_dir = "rules"
[sources.c]
plugin = "c-example"
token = "a-token-for-the-check"
[sources.mine]
plugin = "my-provider"
token = "a-token-for-the-check"
TOML
out=$(switchyard check --config "$away/switchyard.toml" 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out" | grep -q "c-example" && echo "$out" | grep -q "my-provider" \
    || { echo "out-of-tree plugins were not loaded: $out" >&2; exit 1; }
echo "package: installed and checked; plugins built outside the repository load"
