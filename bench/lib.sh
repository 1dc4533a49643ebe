# Shared by bench/run.sh, restart.sh, at-rest.sh, tracing.sh, e2e.sh and queues.sh (sourced,
# with $work set): the Tight source, the example rule and the file action,
# as the full path is measured; waiting for a port.

# Copies the plugins and the example rule into $work.
setup_full_path() {
  mkdir -p "$work/plugins" "$work/rules"
  cp target/release/libswitchyard_tight.so target/release/libswitchyard_file.so "$work/plugins/"
  cp rules/invoice-viewed.rhai "$work/rules/"
}

# The host settings of a config on 127.0.0.1:$1 with data_dir $2 and
# rules_dir $3 (under $work), plugins from $work/plugins, and the Tight
# source (its secret from BENCH_SECRET); the actions follow.
tight_host() {
  cat <<TOML
listen = "127.0.0.1:$1"
data_dir = "$2"
plugin_dir = "plugins"
rules_dir = "$3"
[sources.tight]
plugin = "tight"
secret = { env = "BENCH_SECRET" }
TOML
}

# A config as tight_host's, with the file action of the example rule; its
# lines go to $work/data/notify-owner.jsonl.
config() {
  tight_host "$@"
  cat <<TOML
[actions.notify-owner]
plugin = "file"
path = "$work/data/notify-owner.jsonl"
TOML
}

# Lines the file action has written.
action_lines() { cat "$work/data/notify-owner.jsonl" 2>/dev/null | wc -l; }

# Waits (at most 30 s) until the file action has written $1 lines.
drained() {
  for _ in $(seq 1 300); do
    [ "$(action_lines)" -ge "$1" ] && return 0
    sleep 0.1
  done
}

# Waits (at most 10 s) until something listens on 127.0.0.1:$1; exits if not.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  exit 1
}
