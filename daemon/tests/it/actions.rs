//! Action plugins against real servers on 127.0.0.1: the http action to a
//! receiver that verifies with the `standardwebhooks` library; retries with
//! Retry-After, 410 disabling the action until enabled, timeouts, and the
//! circuit breaker opening and closing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

pub(crate) const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A Python server from tests/fixtures/ on 127.0.0.1: it prints its port,
/// logs what it receives as JSON lines, and is killed on drop.
pub struct Fixture {
    child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Fixture {
    pub fn start(script: &str, args: &[&str], log: std::path::PathBuf) -> Fixture {
        let mut child = Command::new("python3")
            .arg(repo_root().join("daemon/tests/fixtures").join(script))
            .args(args)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (pip install -r requirements-dev.txt)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} did not say its port: {line:?}"));
        Fixture { child, port, log }
    }

    /// receiver.py: verifies with `standardwebhooks` (given a secret) and
    /// answers as `script` says.
    pub fn receiver(dir: &std::path::Path, secret: &str, script: &str) -> Fixture {
        Self::start(
            "receiver.py",
            &["--secret", secret, "--script", script],
            dir.join("receiver.jsonl"),
        )
    }

    /// receiver.py answering every request as `step` says (`sleep:0.1`).
    pub fn receiver_all(dir: &std::path::Path, secret: &str, step: &str) -> Fixture {
        Self::start(
            "receiver.py",
            &["--secret", secret, "--default", step],
            dir.join("receiver.jsonl"),
        )
    }

    /// smtp_server.py (aiosmtpd): refuses the first `refuse` messages.
    pub fn smtp(dir: &std::path::Path, refuse: u32) -> Fixture {
        Self::start(
            "smtp_server.py",
            &["--refuse", &refuse.to_string()],
            dir.join("smtp.jsonl"),
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/in", self.port)
    }

    /// What it received so far.
    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) for `n` lines.
    pub fn wait(&self, n: usize, secs: u64) -> Vec<Value> {
        eventually(secs, || self.lines().len() >= n);
        self.lines()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployment whose rule sends every invoiceViewed to an http action.
pub(crate) fn forwarding(
    env: &Env,
    url: &str,
    action_extra: &str,
    host_extra: &str,
) -> std::path::PathBuf {
    let quick = r#"["200ms", "200ms", "200ms", "200ms", "200ms"]"#;
    forwarding_retried(env, url, action_extra, host_extra, quick)
}

/// As [`forwarding`], with `retry_schedule` as given (TOML).
pub(crate) fn forwarding_retried(
    env: &Env,
    url: &str,
    action_extra: &str,
    host_extra: &str,
    retry_schedule: &str,
) -> std::path::PathBuf {
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_http"));
    env.rule(
        "forward",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("forward", #{ invoice: event.data.eventData.entityId });"#,
    );
    env.config(&format!(
        r#"{host_extra}
[delivery]
retry_schedule = {retry_schedule}
jitter = 0.0

{TIGHT_SOURCE}
[actions.forward]
plugin = "http"
url = "{url}"
secret = "{HOOK_SECRET}"
headers = {{ "X-Env" = "test" }}
{action_extra}
"#
    ))
}

#[test]
fn http_forward_is_signed_and_retried_with_the_same_webhook_id() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "500,429:1,200");
    let config = forwarding(&env, &rx.url(), "", "");
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_fwd");
    let reqs = rx.wait(3, 20);
    assert_eq!(reqs.len(), 3, "{}", daemon.logs());
    for r in &reqs {
        assert_eq!(
            r["verified"], true,
            "the standardwebhooks library verifies it: {r}"
        );
        assert_eq!(r["id"], format!("{id}:forward:0"));
        assert_eq!(r["headers"]["x-env"], "test");
    }
    let body: Value = serde_json::from_str(reqs[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "tight.invoiceViewed");
    assert_eq!(body["data"]["id"], id.as_str());
    // Retry-After: 1 was honoured.
    let gap = reqs[2]["at"].as_f64().unwrap() - reqs[1]["at"].as_f64().unwrap();
    assert!(
        gap >= 0.9,
        "retried {gap:.2}s after a 429 with Retry-After: 1"
    );
    assert!(eventually(10, || {
        let (_, out) = cli(&["events", "show", &id], &config);
        out.contains(r#""state": "done""#)
    }));
}

#[test]
fn gone_disables_the_action_until_it_is_enabled() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "410");
    let config = forwarding(&env, &rx.url(), "", "");
    let daemon = Daemon::start(&config);
    let first = daemon.send_viewed("inv_gone1");
    assert_eq!(rx.wait(1, 10).len(), 1);
    assert!(eventually(10, || daemon.logged("action disabled")));
    let (_, list) = cli(&["actions", "list"], &config);
    assert!(
        list.contains("forward") && list.contains("disabled"),
        "{list}"
    );
    let (_, dead) = cli(&["dlq", "list"], &config);
    assert!(
        dead.contains(&first),
        "the 410 job is a dead letter: {dead}"
    );
    // While disabled, new jobs wait: the dispatcher took the job and put it
    // back, and the target heard nothing more.
    let second = daemon.send_viewed("inv_gone2");
    assert!(
        daemon.logged(&format!(r#""event_id":"{second}","action":"forward""#))
            && daemon.logged("job waits: its action is paused"),
        "{}",
        daemon.logs()
    );
    assert_eq!(rx.lines().len(), 1);
    let (code, out) = cli(&["actions", "enable", "forward"], &config);
    assert_eq!(code, 0, "{out}");
    let reqs = rx.wait(2, 10);
    assert_eq!(reqs.len(), 2, "{}", daemon.logs());
    assert_eq!(reqs[1]["id"], format!("{second}:forward:0"));
}

#[test]
fn a_slow_target_times_out_and_is_retried() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "sleep:3,200");
    let config = forwarding(&env, &rx.url(), "timeout_ms = 500", "");
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_slow");
    let reqs = rx.wait(2, 15);
    assert_eq!(reqs.len(), 2, "{}", daemon.logs());
    assert_eq!(reqs[0]["id"], reqs[1]["id"]);
    assert!(daemon.logged("within 500 ms"), "{}", daemon.logs());
    assert!(eventually(10, || {
        let (_, out) = cli(&["events", "show", &id], &config);
        out.contains(r#""state": "done""#)
    }));
}

/// The http action takes its jobs in batch calls; a call held up by a slow
/// target must not hold up the jobs behind it. The receiver holds the first
/// request until two more have come in (at most 20 s, past the action's
/// 15 s deadline): they can only come in while it is held if another call
/// carries them.
#[test]
fn a_slow_call_does_not_hold_up_the_jobs_behind_it() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "hold:2");
    let config = forwarding(&env, &rx.url(), "", "");
    let daemon = Daemon::start(&config);
    let first = daemon.send_viewed("inv_held");
    assert!(
        eventually(10, || rx.lines().len() == 1),
        "{}",
        daemon.logs()
    );
    let second = daemon.send_viewed("inv_next1");
    let third = daemon.send_viewed("inv_next2");
    let lines = rx.wait(4, 30);
    let held = lines
        .iter()
        .find(|l| l["held"] == true)
        .unwrap_or_else(|| panic!("the held request was not answered: {lines:?}"));
    assert_eq!(held["released_by_others"], true, "{lines:?}");
    for id in [&first, &second, &third] {
        assert!(
            eventually(10, || show(&config, id)["jobs"][0]["state"] == "done"),
            "{id}: {}",
            daemon.logs()
        );
        assert_eq!(show(&config, id)["jobs"][0]["attempts"], 1);
    }
}

#[test]
fn the_circuit_breaker_opens_and_closes() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "500,500,200");
    let config = forwarding(
        &env,
        &rx.url(),
        // Long enough for `actions list` to see it open on a busy machine.
        "breaker_failures = 2\nbreaker_cooldown = \"4s\"",
        "",
    );
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_cb");
    assert!(
        eventually(10, || daemon.logged("circuit open")),
        "{}",
        daemon.logs()
    );
    // The state is stored just after the line is logged: read until it is.
    let mut list = String::new();
    assert!(
        eventually(10, || {
            list = cli(&["actions", "list"], &config).1;
            list.contains("open")
        }),
        "{list}"
    );
    // After the cool-down (with no request during it: see the gap below),
    // one probe succeeds and closes it.
    assert!(
        eventually(15, || daemon.logged("circuit closed")),
        "{}",
        daemon.logs()
    );
    assert!(
        eventually(10, || {
            list = cli(&["actions", "list"], &config).1;
            list.contains("closed")
        }),
        "{list}"
    );
    let reqs = rx.lines();
    let gap = reqs[2]["at"].as_f64().unwrap() - reqs[1]["at"].as_f64().unwrap();
    assert!(
        gap >= 3.8,
        "the probe came {gap:.2}s after the breaker opened"
    );
}

#[test]
fn exec_gets_the_event_on_stdin_and_a_hang_is_killed_with_its_children() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    let out = env.path("data/stdin.json");
    let pids = env.path("data/pids");
    env.rule(
        "run",
        r#"const EVENTS = ["tight.invoiceViewed"];
action(if event.data.eventData.entityId == "inv_hang" { "hang" } else { "save" }, #{ invoice: event.data.eventData.entityId });"#,
    );
    let config = env.config(&format!(
        r#"
[delivery]
retry_schedule = ["100ms"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.save]
plugin = "exec"
shell = "cat > {out}; echo \"invoice=$INVOICE\""
env = {{ INVOICE = "/params/invoice" }}

[actions.hang]
plugin = "exec"
shell = "sleep 60 & echo $! >> {pids}; sleep 60"
timeout_ms = 400
"#,
        out = out.display(),
        pids = pids.display()
    ));
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_exec");
    assert!(eventually(10, || out.exists()
        && std::fs::read_to_string(&out).unwrap().ends_with('}')));
    let event: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(event["id"], id.as_str());
    assert!(
        eventually(10, || {
            let (_, shown) = cli(&["events", "show", &id], &config);
            shown.contains(r#"invoice=inv_exec"#)
        }),
        "stdout is recorded with the attempt"
    );

    let hang = daemon.send_viewed("inv_hang");
    // Two attempts, each killed at 400 ms, then a dead letter.
    assert!(
        eventually(15, || {
            let (_, dead) = cli(&["dlq", "list"], &config);
            dead.contains(&hang)
        }),
        "{}",
        daemon.logs()
    );
    let children: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(children.len(), 2);
    for pid in children {
        // SIGKILL was sent; the kernel ends the process a moment later.
        let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            eventually(5, || stat().is_empty() || stat().contains(") Z ")),
            "child {pid} still runs: {}",
            stat()
        );
    }
}

/// The program an exec action runs sees none of the daemon's secrets: not a
/// source's `{ env = … }` secret, not an action's password, not the
/// credentials folder, no open file of the daemon's; it sees what the config
/// names and the job's variables. A setting that names a variable the loader
/// acts on is refused before anything runs.
#[test]
fn exec_children_get_a_clean_environment_and_no_daemon_files() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.add_plugin(&built_plugin("switchyard_email"));
    env.add_plugin(&built_plugin("switchyard_http"));
    let creds = env.path("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("smtp-password"), "cred-smtp-password-value").unwrap();
    let out = env.path("child");
    std::fs::create_dir_all(&out).unwrap();
    env.rule(
        "exec",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("inspect", #{ invoice: event.data.eventData.entityId });
action("nul", #{ note: "line\x00cut" });"#,
    );
    let config = env.config(&format!(
        r#"
[delivery]
retry_schedule = ["100ms"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.inspect]
plugin = "exec"
shell = "env > {out}/env; ls -l /proc/self/fd/ > {out}/fds"
env = {{ INVOICE = "/params/invoice" }}
inherit_env = ["IT_SHARED_WITH_CHILD"]

[actions.nul]
plugin = "exec"
command = ["/bin/true"]
env = {{ NOTE = "/params/note" }}

[actions.mail]
plugin = "email"
from = "Switchyard <switchyard@example.com>"
host = "127.0.0.1"
username = "switchyard"
password = {{ credential = "smtp-password" }}

[actions.forward]
plugin = "http"
url = "http://127.0.0.1:9/unused"
secret = {{ env = "IT_ACTION_TOKEN" }}
"#,
        out = out.display()
    ));
    let (_, checked) = cli(&["check"], &config);
    assert!(!checked.contains("refused"), "{checked}");
    let daemon = Daemon::start_with_env(
        &config,
        &[
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
            ("IT_ACTION_TOKEN", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("IT_SHARED_WITH_CHILD", "shared-value"),
        ],
    );
    let id = daemon.send_viewed("inv_clean");
    assert!(eventually(10, || out.join("fds").exists()
        && !std::fs::read_to_string(out.join("fds"))
            .unwrap()
            .is_empty()));
    let seen = std::fs::read_to_string(out.join("env")).unwrap();
    for (needle, what) in [
        (SECRET, "the source's secret"),
        ("SWITCHYARD_IT_SECRET", "the source's secret variable"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "an action's secret"),
        ("IT_ACTION_TOKEN", "an action's secret variable"),
        ("cred-smtp-password-value", "a credential"),
        ("CREDENTIALS_DIRECTORY", "the credentials folder"),
        ("SWITCHYARD_LOG", "the daemon's own settings"),
    ] {
        assert!(!seen.contains(needle), "the child sees {what}:\n{seen}");
    }
    for needle in [
        "IT_SHARED_WITH_CHILD=shared-value\n",
        "INVOICE=inv_clean\n",
        "SWITCHYARD_IDEMPOTENCY_KEY=",
        "PATH=",
    ] {
        assert!(seen.contains(needle), "{needle} missing:\n{seen}");
    }
    // No socket, store file, plugin or epoll/inotify handle of the daemon's
    // (what the test harness itself left open may pass through, as it does
    // to the daemon).
    let fds = std::fs::read_to_string(out.join("fds")).unwrap();
    let data_dir = env.path("data");
    for line in fds.lines().filter(|l| l.contains(" -> ")) {
        let target = line.split(" -> ").nth(1).unwrap_or_default();
        assert!(
            !target.starts_with("socket:")
                && !target.starts_with("anon_inode:")
                && !target.starts_with(data_dir.to_str().unwrap())
                && !target.starts_with(env.plugin_dir().to_str().unwrap()),
            "the child holds a file of the daemon's: {line}\n{fds}"
        );
    }
    assert!(fds.contains("/proc/"), "{fds}");

    // The NUL byte in the rule's `note` cannot go into an environment: the
    // job fails for good with a message that says so.
    assert!(
        eventually(10, || {
            let (_, shown) = cli(&["events", "show", &id], &config);
            shown.contains("NUL byte")
        }),
        "{}",
        cli(&["events", "show", &id], &config).1
    );
    drop(daemon);

    // A setting that names a variable the loader acts on is refused.
    let bad = std::fs::read_to_string(&config).unwrap().replace(
        "env = { NOTE = \"/params/note\" }",
        "env = { LD_PRELOAD = \"/params/note\" }",
    );
    std::fs::write(&config, bad).unwrap();
    let (code, checked) = cli(&["check"], &config);
    assert_ne!(code, 0, "{checked}");
    assert!(checked.contains("LD_PRELOAD is refused"), "{checked}");
}

#[test]
fn email_reaches_a_real_smtp_server_after_a_refusal() {
    let env = Env::new();
    let smtp = Fixture::smtp(env.dir.path(), 1);
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_email"));
    env.rule(
        "mail",
        r#"const EVENTS = ["tight.invoiceViewed"];
let invoice = event.data.eventData.entityId;
action("mail-owner", #{
    to: "owner@example.com",
    cc: ["books@example.com"],
    subject: `Invoice ${invoice} was viewed`,
    text: `A client opened invoice ${invoice}.`,
});"#,
    );
    let config = env.config(&format!(
        r#"
[delivery]
retry_schedule = ["300ms", "300ms"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.mail-owner]
plugin = "email"
host = "127.0.0.1"
port = {}
from = "Switchyard <switchyard@example.com>"
"#,
        smtp.port
    ));
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_mail");
    assert!(
        eventually(15, || !smtp.lines().is_empty()),
        "{}",
        daemon.logs()
    );
    let m = &smtp.lines()[0];
    assert_eq!(m["from"], "switchyard@example.com");
    assert_eq!(
        m["to"],
        serde_json::json!(["owner@example.com", "books@example.com"])
    );
    let content = m["content"].as_str().unwrap();
    assert!(
        content.contains("Subject: Invoice inv_mail was viewed"),
        "{content}"
    );
    assert!(
        content.contains("A client opened invoice inv_mail."),
        "{content}"
    );
    assert!(
        content.contains(&format!("Message-ID: <{id}.mail.0@switchyard>")),
        "{content}"
    );
    // The 451 was a retry, the second attempt went through.
    let (_, shown) = cli(&["events", "show", &id], &config);
    assert!(
        shown.contains("451") && shown.contains(r#""state": "done""#),
        "{shown}"
    );
}

#[test]
fn slack_messages_survive_a_rate_limit() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), "", "429:1,200");
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_slack"));
    env.rule(
        "tell",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("slack", #{ text: `Invoice ${event.data.eventData.entityId} was viewed` });"#,
    );
    let config = env.config(&format!(
        r#"
{TIGHT_SOURCE}
[actions.slack]
plugin = "slack"
webhook_url = "{}"
"#,
        rx.url()
    ));
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_slack");
    let reqs = rx.wait(2, 15);
    assert_eq!(reqs.len(), 2, "{}", daemon.logs());
    let body: Value = serde_json::from_str(reqs[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["text"], "Invoice inv_slack was viewed");
    let gap = reqs[1]["at"].as_f64().unwrap() - reqs[0]["at"].as_f64().unwrap();
    assert!(gap >= 0.9, "Retry-After honoured ({gap:.2}s)");
    assert!(
        !daemon.logs().contains(&rx.url()),
        "the webhook URL is a secret"
    );
}

/// A target that answers with an endless body costs the http and slack
/// actions a bounded read: the job goes on (retried here, as a 500), the
/// daemon does not buffer the flood.
#[test]
fn an_endless_answer_is_read_only_in_part() {
    let env = Env::new();
    let http = Fixture::start(
        "receiver.py",
        &["--secret", HOOK_SECRET, "--script", "flood:500,200"],
        env.path("http.jsonl"),
    );
    let slack = Fixture::start(
        "receiver.py",
        &["--script", "flood:500,200"],
        env.path("slack.jsonl"),
    );
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_http"));
    env.add_plugin(&built_plugin("switchyard_slack"));
    env.rule(
        "both",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("forward", #{ invoice: event.data.eventData.entityId });
action("slack", #{ text: "viewed" });"#,
    );
    let config = env.config(&format!(
        r#"
[delivery]
retry_schedule = ["200ms"]
jitter = 0.0

{TIGHT_SOURCE}
[actions.forward]
plugin = "http"
url = "{}"
secret = "{HOOK_SECRET}"

[actions.slack]
plugin = "slack"
webhook_url = "{}"
"#,
        http.url(),
        slack.url()
    ));
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_flood");
    for rx in [&http, &slack] {
        let lines = rx.wait(3, 30);
        assert_eq!(lines.len(), 3, "{lines:?}\n{}", daemon.logs());
        let sent = lines[1]["flood_sent"].as_u64().expect("the flood ended");
        assert!(
            sent < 64 << 20,
            "the action read {sent} bytes of an endless answer"
        );
    }
    assert!(
        eventually(10, || {
            let (_, shown) = cli(&["events", "show", &id], &config);
            shown.matches(r#""state": "done""#).count() == 2 && shown.contains("HTTP 500 xxxx")
        }),
        "{}",
        cli(&["events", "show", &id], &config).1
    );
}

#[test]
fn jobs_with_the_same_order_key_run_one_at_a_time_in_order() {
    let env = Env::new();
    let rx = Fixture::receiver(
        env.dir.path(),
        HOOK_SECRET,
        "sleep:0.3,sleep:0.3,sleep:0.3,sleep:0.3",
    );
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_http"));
    env.rule(
        "forward",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("forward", #{ customer: "c1", body: #{ invoice: event.data.eventData.entityId } });"#,
    );
    let config = env.config(&format!(
        r#"
{TIGHT_SOURCE}
[actions.forward]
plugin = "http"
url = "{}"
concurrency = 8
order_by = "customer"
"#,
        rx.url()
    ));
    let daemon = Daemon::start(&config);
    for i in 0..4 {
        daemon.send_viewed(&format!("inv_o{i}"));
    }
    let reqs = rx.wait(4, 20);
    assert_eq!(reqs.len(), 4, "{}", daemon.logs());
    let invoices: Vec<String> = reqs
        .iter()
        .map(|r| {
            let b: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            b["invoice"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(invoices, ["inv_o0", "inv_o1", "inv_o2", "inv_o3"]);
    // One at a time: each arrived after the one before was answered (0.3 s).
    for w in reqs.windows(2) {
        let gap = w[1]["at"].as_f64().unwrap() - w[0]["at"].as_f64().unwrap();
        assert!(gap >= 0.28, "overlapped: {gap:.2}s apart");
    }
}

/// `concurrency` bounds the requests in flight at the destination, however
/// the dispatcher batches the jobs: the http action sends a batch's
/// requests at once, so a batch call takes at most `concurrency` jobs and
/// holds a slot for each. (It once sent up to 64 at a time whatever
/// `concurrency` said.)
#[test]
fn an_actions_concurrency_bounds_its_requests_in_flight_however_batched() {
    let env = Env::new();
    let rx = Fixture::receiver_all(env.dir.path(), HOOK_SECRET, "sleep:0.1");
    let config = forwarding(&env, &rx.url(), "concurrency = 3", "");
    let signed = bulk_signed(30, "inv_c", 0);
    let daemon = Daemon::start(&config);
    let sent = daemon.send_in_background(signed, Duration::ZERO);
    assert_eq!(sent.join().unwrap().len(), 30);
    let reqs = rx.wait(30, 30);
    assert_eq!(reqs.len(), 30, "{}", daemon.logs());
    let mut ids: Vec<&str> = reqs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "each job delivered once");
    assert!(reqs.iter().all(|r| r["verified"] == true));
    let most = reqs
        .iter()
        .map(|r| r["in_flight"].as_u64().unwrap())
        .max()
        .unwrap();
    // Reached (the jobs waited for slots), never passed.
    assert_eq!(most, 3, "requests in flight at most");
}

/// `rate` holds an action to its budget: a receiver that refuses past its
/// own limit (429) gets a burst of events without refusing one — each
/// arrives once, jobs over the budget wait in the store (deferred, not
/// attempts, not failures) and go out as the budget frees.
#[test]
fn an_actions_rate_keeps_a_burst_of_events_under_the_receivers_limit() {
    let env = Env::new();
    // 10/s with a burst of 3: at most 13 in any second; the receiver
    // refuses past 15 (a little room for scheduling).
    let rx = Fixture::start(
        "receiver.py",
        &["--secret", HOOK_SECRET, "--limit", "15"],
        env.dir.path().join("receiver.jsonl"),
    );
    let config = forwarding(
        &env,
        &rx.url(),
        "concurrency = 16\nrate = \"10/s\"\nburst = 3",
        "",
    );
    let signed = bulk_signed(60, "inv_r", 0);
    let daemon = Daemon::start(&config);
    let sent = daemon.send_in_background(signed, Duration::ZERO);
    assert_eq!(sent.join().unwrap().len(), 60);
    // `actions list` shows the jobs waiting for the rate, then none.
    let waiting = || -> u64 {
        let (_, out) = cli(&["actions", "list", "--json"], &config);
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["name"] == "forward")
            .and_then(|r| r["waiting_for_rate"].as_u64())
            .unwrap_or(0)
    };
    assert!(eventually(10, || waiting() > 0), "shown waiting");
    let reqs = rx.wait(60, 60);
    assert_eq!(reqs.len(), 60, "{}", daemon.logs());
    let refused: Vec<&Value> = reqs.iter().filter(|r| r["step"] != "200").collect();
    let at: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "{:.3}:{}",
                r["at"].as_f64().unwrap() - reqs[0]["at"].as_f64().unwrap(),
                r["step"]
            )
        })
        .collect();
    assert!(refused.is_empty(), "the receiver refused: {at:?}");
    let mut ids: Vec<&str> = reqs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "each job delivered once");
    let samples = scrape(&daemon);
    let deferred = value(
        &samples,
        "switchyard_action_deferred_total",
        &[("action", "forward")],
    );
    assert!(deferred >= 40.0, "jobs waited for the budget: {deferred}");
    let attempts = value(
        &samples,
        "switchyard_action_attempts_total",
        &[("action", "forward"), ("outcome", "done")],
    );
    assert_eq!(attempts, 60.0, "a wait is not an attempt");
    let (_, dead) = cli(&["dlq", "list"], &config);
    assert!(!dead.contains("forward"), "{dead}");
    assert!(eventually(10, || waiting() == 0), "none left waiting");
}

/// A plugin whose batch is one operation at its destination (the file
/// action: one write and one sync) says so (ABI 1.7): its call counts once
/// against `concurrency`, so `concurrency = 1` still writes every ready
/// line in one call rather than one call per line.
#[test]
fn a_batch_that_is_one_operation_counts_once_against_concurrency() {
    let env = Env::new();
    env.with_standard_plugins();
    let lines = env.path("data/lines.jsonl");
    // A hundred jobs from each event, handed to the dispatcher together.
    env.rule(
        "audit",
        r#"const EVENTS = ["tight.invoiceViewed"];
for i in 0..100 { action("audit", #{ invoice: event.data.eventData.entityId, n: i }); }"#,
    );
    let config = env.config(&format!(
        "{TIGHT_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\nconcurrency = 1\n",
        lines.display()
    ));
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_b1");
    daemon.send_viewed("inv_b2");
    assert!(
        eventually(30, || std::fs::read_to_string(&lines)
            .unwrap_or_default()
            .lines()
            .count()
            == 200),
        "{}",
        daemon.logs()
    );
    let samples = scrape(&daemon);
    let calls = value(
        &samples,
        "switchyard_plugin_calls_total",
        &[
            ("plugin", "file"),
            ("call", "execute_batch"),
            ("outcome", "ok"),
        ],
    );
    // One job a call would be 200 calls.
    assert!(
        (1.0..=100.0).contains(&calls),
        "200 lines in {calls} calls: batches past concurrency = 1"
    );
}

/// A target that answers 429 with `Retry-After` throttles its whole
/// action: the jobs that come meanwhile wait too (back in the store, not
/// an attempt), and go once the wait is over — not only the job that got
/// the answer.
#[test]
fn a_429_with_retry_after_holds_every_job_of_the_action_until_then() {
    let env = Env::new();
    let rx = Fixture::receiver(env.dir.path(), HOOK_SECRET, "429:2");
    let config = forwarding(&env, &rx.url(), "", "");
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_t0");
    let first = rx.wait(1, 10);
    assert_eq!(first[0]["step"], "429:2");
    assert!(
        eventually(10, || daemon.logged("throttled")),
        "{}",
        daemon.logs()
    );
    for i in 1..4 {
        daemon.send_viewed(&format!("inv_t{i}"));
    }
    let reqs = rx.wait(5, 20);
    assert_eq!(reqs.len(), 5, "{}", daemon.logs());
    let refused_at = reqs[0]["at"].as_f64().unwrap();
    for r in &reqs[1..] {
        assert_eq!(r["step"], "200");
        let waited = r["at"].as_f64().unwrap() - refused_at;
        assert!(waited >= 1.9, "a job went {waited:.2}s after the 429");
    }
    let mut ids: Vec<&str> = reqs[1..]
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each delivered once");
    let samples = scrape(&daemon);
    let retried = value(
        &samples,
        "switchyard_action_attempts_total",
        &[("action", "forward"), ("outcome", "retryable")],
    );
    assert_eq!(retried, 1.0, "the jobs that waited used no attempt");
}
