//! Shared test context: a temporary deployment (plugins, rules, config), the
//! daemon process on 127.0.0.1, and helpers to sign and send webhooks.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "it-tight-secret-0123456789abcdefghij";

/// The Tight source most tests post to, its secret from the environment.
pub const TIGHT_SOURCE: &str =
    "[sources.tight]\nplugin = \"tight\"\nsecret = { env = \"SWITCHYARD_IT_SECRET\" }\n";

/// The folder cargo put the binary and the plugin libraries in.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_switchyard"))
        .parent()
        .expect("binary has a folder")
        .to_path_buf()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ is in the repo")
        .to_path_buf()
}

/// A plugin library built by this workspace. The plugin crates are
/// dev-dependencies of the daemon, so cargo builds them into `deps/`.
pub fn built_plugin(lib_name: &str) -> PathBuf {
    let file = format!(
        "{}{lib_name}.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    );
    let candidates = [
        target_dir().join("deps").join(&file),
        target_dir().join(&file),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} was not built (looked in {candidates:?})"))
        .clone()
}

/// Builds the C example plugin against the checked-in header into `out_dir`.
pub fn build_c_plugin(out_dir: &Path) -> PathBuf {
    build_c(
        "plugins/c-example/token_provider.c",
        &repo_root().join("plugin-api/include"),
        &out_dir.join("libswitchyard_c_example.so"),
    )
}

/// Compiles a C plugin (a path under the repository) against the ABI header
/// in `include` into the shared library `out`.
pub fn build_c(source: &str, include: &Path, out: &Path) -> PathBuf {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-shared", "-fPIC", "-I",
        ])
        .arg(include)
        .arg("-o")
        .arg(out)
        .arg(repo_root().join(source))
        .status()
        .expect("a C compiler (cc) is needed for the C plugin tests");
    assert!(status.success(), "building {source} failed");
    out.to_path_buf()
}

/// A temporary deployment: plugin_dir, rules_dir, data_dir and a config.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        tls_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["plugins", "rules", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.path("plugins")
    }

    /// Copies a built plugin library into plugin_dir.
    pub fn add_plugin(&self, lib: &Path) -> &Self {
        std::fs::copy(lib, self.plugin_dir().join(lib.file_name().unwrap())).unwrap();
        self
    }

    pub fn with_standard_plugins(&self) -> &Self {
        self.add_plugin(&built_plugin("switchyard_tight"));
        self.add_plugin(&built_plugin("switchyard_file"));
        self
    }

    /// Every plugin `cargo build` ships (what the example config uses).
    pub fn with_bundled_plugins(&self) -> &Self {
        self.with_standard_plugins();
        for lib in [
            "switchyard_teal",
            "switchyard_tripletex",
            "switchyard_tightknit",
            "switchyard_webhook",
            "switchyard_email",
            "switchyard_http",
            "switchyard_slack",
            "switchyard_exec",
        ] {
            self.add_plugin(&built_plugin(lib));
        }
        self
    }

    /// The example config of the repository, with this build's plugins and
    /// the repository's rules folder.
    pub fn example_config(&self) -> PathBuf {
        let root = repo_root();
        self.with_bundled_plugins();
        let text = std::fs::read_to_string(root.join("switchyard.toml"))
            .unwrap()
            .replace(
                "plugin_dir = \"target/release\"",
                "plugin_dir = \"plugins\"",
            )
            .replace(
                "rules_dir = \"rules\"",
                &format!("rules_dir = \"{}\"", root.join("rules").display()),
            );
        let config = self.path("switchyard.toml");
        std::fs::write(&config, text).unwrap();
        config
    }

    pub fn rule(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.path("rules").join(format!("{name}.rhai")), text).unwrap();
        self
    }

    /// Writes `switchyard.toml`: the host settings, then `rest`.
    pub fn config(&self, rest: &str) -> PathBuf {
        let path = self.path("switchyard.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\nrules_dir = \"rules\"\n{rest}"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The usual setup: a Tight source, a file action `audit`, and a rule
    /// sending every invoiceViewed to it.
    pub fn standard(&self) -> PathBuf {
        self.standard_with("", "")
    }

    /// The usual setup, with `host` settings (top-level keys and tables such
    /// as `[store]`) before it and `source` lines added to `[sources.tight]`.
    pub fn standard_with(&self, host: &str, source: &str) -> PathBuf {
        self.with_standard_plugins();
        self.rule(
            "viewed",
            r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, type: event.type });"#,
        );
        self.config(&format!(
            r#"{host}
{TIGHT_SOURCE}{source}

[actions.audit]
plugin = "file"
path = "{}"
"#,
            self.audit_path().display()
        ))
    }

    pub fn audit_path(&self) -> PathBuf {
        self.path("data/audit.jsonl")
    }

    /// The JSON lines the file action wrote so far.
    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Waits (bounded) until the audit file has at least `n` lines.
    /// Waits (at most 10 s) for the audit line of the event `id` and
    /// returns every line: the positive marker a negative check waits for
    /// (everything sent before it was handled), then reads the state once.
    pub fn wait_audit_of(&self, id: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.iter().any(|l| l["event_id"] == id) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no audit line for {id}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_audit(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The daemon process; killed on drop.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with_env(config, &[])
    }

    /// As [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(["run", "--log-format", "json", "--config"])
                .arg(config)
                .envs(env.iter().copied()),
        )
    }

    /// As [`start`](Self::start), with the soft open-file limit systemd
    /// gives a service (1,024) and the hard limit this process has.
    pub fn start_with_systemd_file_limit(config: &Path) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["run", "--log-format", "json", "--config"])
            .arg(config);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                let (_, hard) = rlimit::Resource::NOFILE.get()?;
                rlimit::Resource::NOFILE.set(1024.min(hard), hard)
            });
        }
        Self::spawn(&mut cmd)
    }

    /// As [`start`](Self::start), with `data_dir` on a disk of `size`
    /// (`"8m"`): a tmpfs mounted in a mount namespace of its own (`unshare
    /// -Urm`, no root needed), gone when the daemon exits. `prepare` is
    /// shell run in `data_dir` first (`$1`). The test sees the daemon's
    /// files through `/proc/<pid>/root`.
    pub fn start_on_small_disk(
        config: &Path,
        data_dir: &Path,
        size: &str,
        prepare: &str,
    ) -> Daemon {
        std::fs::create_dir_all(data_dir).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs \"$1\" && cd \"$1\" && {{ {prepare} ; }} && cd / && exec \"$0\" run --log-format json --config \"$2\""
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-Urm", "sh", "-c", &script])
            .arg(env!("CARGO_BIN_EXE_switchyard"))
            .arg(data_dir)
            .arg(config);
        Self::spawn(&mut cmd)
    }

    /// A path as the daemon sees it (in its own mount namespace, if any).
    pub fn seen(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(path.strip_prefix("/").unwrap())
    }

    /// As [`start`](Self::start), on a listening socket it inherits as
    /// systemd passes one (socket activation): as file descriptor 3, with
    /// `LISTEN_FDS=1`, `LISTEN_FDNAMES=webhooks` and `LISTEN_PID` its own
    /// pid (set by the shell it is `exec`ed from).
    pub fn start_on(config: &Path, socket: &std::net::TcpListener) -> Daemon {
        let program = Path::new(env!("CARGO_BIN_EXE_switchyard"));
        let mut cmd = switchyard::listener::activation::passing(program, socket);
        cmd.args(["run", "--log-format", "json", "--config"])
            .arg(config);
        Self::spawn(&mut cmd)
    }

    fn spawn(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .env("SWITCHYARD_IT_SECRET", SECRET)
            .env("SWITCHYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(addr) = v.pointer("/fields/addr").and_then(Value::as_str) {
                        let _ = tx.send(addr.parse::<SocketAddr>().ok());
                    }
                }
                sink.lock().unwrap().push(line);
            }
            let _ = tx.send(None);
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Daemon { child, addr, logs }
    }

    /// The admin listener's address, as the daemon logs it.
    pub fn admin_addr(&self) -> SocketAddr {
        assert!(self.logged("admin API on"), "{}", self.logs());
        let logs = self.logs();
        let line = logs.lines().find(|l| l.contains("admin API on")).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        v["fields"]["admin_addr"].as_str().unwrap().parse().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Whether the log has (or gets, within 10 s) a line containing `needle`.
    /// The log is read by a thread of its own, a moment behind the answers.
    pub fn logged(&self, needle: &str) -> bool {
        eventually(10, || self.logs().contains(needle))
    }

    /// Sends SIGTERM, as systemd does on stop, without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Posts a body with headers; returns (status, body).
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> (u16, String) {
        tls_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut req = client.post(self.url(path)).body(body.into());
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().expect("request reached the daemon");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Sends a PyJWT-signed invoiceViewed for `invoice`; expects a 200 and
    /// returns the new event's id.
    pub fn send_viewed(&self, invoice: &str) -> String {
        let body = invoice_viewed(invoice);
        let token = pyjwt(SECRET, body.as_bytes(), &[]);
        let (status, text) = self.post("/hooks/tight", &[("Tight-Verification", &token)], body);
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["accepted"][0].as_str().expect("a new event").to_string()
    }

    /// Posts pre-signed webhooks one by one from another thread, `pause`
    /// apart, each expected to get a 200; the thread returns the accepted
    /// event ids in order.
    pub fn send_in_background(
        &self,
        signed: Vec<Signed>,
        pause: Duration,
    ) -> std::thread::JoinHandle<Vec<String>> {
        tls_provider();
        let url = self.url("/hooks/tight");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let mut ids = Vec::new();
            for s in signed {
                let resp = client
                    .post(&url)
                    .header("Tight-Verification", &s.token)
                    .body(s.body)
                    .send()
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let v: Value = resp.json().unwrap();
                ids.push(v["accepted"][0].as_str().unwrap().to_string());
                std::thread::sleep(pause);
            }
            ids
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process outright (SIGKILL): no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the webhook listener: (status, body).
pub fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    let resp = reqwest::blocking::get(daemon.url(path)).unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The samples of /metrics as the Prometheus client library parses them.
pub fn scrape(daemon: &Daemon) -> Vec<Value> {
    let (status, text) = get(daemon, "/metrics");
    assert_eq!(status, 200);
    let mut child = Command::new("python3")
        .arg(repo_root().join("daemon/tests/fixtures/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The id of the one event a 200 answer to a webhook accepted.
pub fn accepted_id(answer: &str) -> String {
    let v: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    v["accepted"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no event accepted: {answer}"))
        .to_string()
}

/// Reloads of the configuration and plugins that ended `outcome` (`done`,
/// `refused`), as /metrics counts them.
pub fn reloads(daemon: &Daemon, outcome: &str) -> f64 {
    value(
        &scrape(daemon),
        "switchyard_config_reloads_total",
        &[("outcome", outcome)],
    )
}

/// Waits (at most 10 s) until `reloads(outcome)` reaches `n`; returns it.
pub fn wait_reloads(daemon: &Daemon, outcome: &str, n: f64) -> f64 {
    let mut count = 0.0;
    eventually(10, || {
        count = reloads(daemon, outcome);
        count >= n
    });
    count
}

/// Webhooks of `source` refused for `reason`, as /metrics counts them.
pub fn refused(daemon: &Daemon, source: &str, reason: &str) -> f64 {
    value(
        &scrape(daemon),
        "switchyard_webhooks_rejected_total",
        &[("source", source), ("reason", reason)],
    )
}

pub fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// A Tight-Verification token from PyJWT.
pub fn pyjwt(secret: &str, body: &[u8], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let out = Command::new("python3")
        .arg(repo_root().join("daemon/tests/fixtures/tight_jwt.py"))
        .args(["--secret", secret, "--body-file"])
        .arg(&body_file)
        .args(extra)
        .output()
        .expect("python3 is needed to sign test webhooks");
    assert!(
        out.status.success(),
        "signing with PyJWT failed (pip install -r requirements-dev.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A body signed by `fixtures/sign.py` (Python's hmac, `cryptography`,
/// `standardwebhooks`): `{"headers": [[name, value], …], "body", …}`.
pub fn signed_by_python(scheme: &str, body: &str, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .arg(repo_root().join("daemon/tests/fixtures/sign.py"))
        .arg(scheme)
        .arg("--body-file")
        .arg(&file)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "sign.py failed (pip install -r requirements-dev.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Tight LIFECYCLE invoiceViewed body.
pub fn invoice_viewed(invoice: &str) -> String {
    format!(
        r#"{{"editor":{{"userId":"usr_1"}},"company":{{"id":"co_1"}},"type":"LIFECYCLE","event":"invoiceViewed","datetime":"2025-04-01T11:31:04.1Z","eventData":{{"entityId":"{invoice}"}}}}"#
    )
}

/// A signed webhook made by PyJWT.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Signed {
    pub invoice: String,
    pub body: String,
    pub token: String,
}

/// `n` distinct invoiceViewed webhooks signed by PyJWT in one go, each body
/// padded with `pad` bytes.
pub fn bulk_signed(n: usize, prefix: &str, pad: usize) -> Vec<Signed> {
    let out = Command::new("python3")
        .arg(repo_root().join("daemon/tests/fixtures/tight_jwt.py"))
        .args([
            "--secret",
            SECRET,
            "--bulk",
            &n.to_string(),
            "--prefix",
            prefix,
            "--pad",
            &pad.to_string(),
        ])
        .output()
        .expect("python3 is needed to sign test webhooks");
    assert!(
        out.status.success(),
        "bulk signing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs a `switchyard` command with the test secret; returns (exit code, stdout + stderr).
pub fn cli(args: &[&str], config: &Path) -> (i32, String) {
    cli_with_env(args, config, &[])
}

/// As [`cli`], with extra environment variables.
pub fn cli_with_env(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("SWITCHYARD_IT_SECRET", SECRET)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// reqwest is built with TLS whose crypto provider the program picks.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port free on 127.0.0.1 just now (for a server that must keep its
/// port across a restart, or be named before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `f` until it returns true or `secs` pass; returns the last result.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 20 s) until the daemon running `config` has nothing
/// left to do — no unrouted event, no job pending or running, as its
/// status reads them from the store (`switchyard status`, the local admin
/// socket) — and returns that status. The barrier before checking that
/// something did not happen: whatever was going to happen has.
pub fn wait_quiet(config: &Path) -> Value {
    let mut last = (0, String::new());
    let quiet = eventually(20, || {
        last = cli(&["status"], config);
        let status: Value = serde_json::from_str(&last.1).unwrap_or_default();
        last.0 == 0
            && ["unrouted_events", "pending_jobs", "running_jobs"]
                .iter()
                .all(|k| status["backlog"][*k] == 0)
    });
    assert!(quiet, "never quiet: {}", last.1);
    serde_json::from_str(&last.1).unwrap()
}

/// `switchyard events show ID` as JSON.
pub fn show(config: &std::path::Path, id: &str) -> Value {
    let (code, out) = cli(&["events", "show", id], config);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of the test's own and a server certificate it signed, for
/// 127.0.0.1 and localhost, made with the `openssl` command (not the code
/// under test): `ca.crt`, `server.crt` and `server.key` in `dir`; and a
/// client certificate it signed, `client.crt` and `client.key`.
pub fn make_test_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=switchyard test CA",
        ],
    );
    signed_by_the_ca(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    // For a server that asks its clients for a certificate.
    signed_by_the_ca(
        dir,
        "client",
        "/CN=switchyard",
        "extendedKeyUsage=clientAuth\n",
    );
}

/// `NAME.key` and `NAME.crt` in `dir`: a new key, and its certificate for
/// `subject` with the extensions `ext`, signed by `ca.key`.
fn signed_by_the_ca(dir: &Path, name: &str, subject: &str, ext: &str) {
    let (key, csr, crt, ext_file) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    );
}
