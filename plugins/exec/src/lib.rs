//! # exec action plugin
//!
//! Runs a program for each job: an argument list (no shell, unless the
//! config asks for one with `shell`), the event envelope as JSON on stdin,
//! chosen values in the environment. The program runs in its own process
//! group; at the deadline the whole group is killed (SIGKILL), children
//! included. Exit 0 is done; an exit code listed in `retry_exit_codes`
//! (default 75, EX_TEMPFAIL) is retried; any other, or death by a signal,
//! is permanent. Stdout and stderr are captured up to `max_output_bytes`
//! each and recorded with the attempt.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The program and its arguments.
    #[serde(default)]
    command: Vec<String>,
    /// A command line for `/bin/sh -c` instead (explicit opt-in).
    #[serde(default)]
    shell: Option<String>,
    /// Environment variables: name → JSON pointer into the job
    /// (`/params/invoice`, `/event/type`, `/idempotency_key`).
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_retry_codes")]
    retry_exit_codes: Vec<i32>,
    #[serde(default = "default_max_output")]
    max_output_bytes: usize,
    #[serde(default)]
    working_dir: Option<String>,
}

fn default_retry_codes() -> Vec<i32> {
    vec![75]
}

fn default_max_output() -> usize {
    64 * 1024
}

pub struct Exec {
    host: Host,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    retry_exit_codes: Vec<i32>,
    max_output: usize,
    working_dir: Option<String>,
}

/// Reads a pipe to its end, keeping at most `max` bytes.
fn drain(
    mut pipe: impl Read + Send + 'static,
    max: usize,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        let mut cut = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    cut |= n > room;
                }
            }
        }
        (kept, cut)
    })
}

fn text((bytes, cut): &(Vec<u8>, bool)) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if *cut {
        s.push_str("…[cut]");
    }
    s
}

fn env_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Action for Exec {
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("exec settings: {e}"))?;
        let argv = match (c.command.is_empty(), c.shell) {
            (false, None) => c.command,
            (true, Some(line)) => vec!["/bin/sh".into(), "-c".into(), line],
            (false, Some(_)) => return Err("exec settings: give command or shell, not both".into()),
            (true, None) => {
                return Err(
                    "exec settings: command = [\"/path/to/program\", \"arg\", …] is required"
                        .into(),
                )
            }
        };
        for (name, pointer) in &c.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(format!(
                    "exec settings: {name:?} is not an environment variable name"
                ));
            }
            if !pointer.starts_with('/') {
                return Err(format!(
                    "exec settings: env.{name} = {pointer:?} is not a JSON pointer into the job (e.g. \"/params/invoice\")"
                ));
            }
        }
        Ok(Exec {
            host,
            argv,
            env: c.env,
            retry_exit_codes: c.retry_exit_codes,
            max_output: c.max_output_bytes,
            working_dir: c.working_dir,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let job_doc = serde_json::to_value(job).unwrap_or(Value::Null);
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .env("SWITCHYARD_JOB_ID", &job.id)
            .env("SWITCHYARD_IDEMPOTENCY_KEY", &job.idempotency_key)
            .env("SWITCHYARD_ATTEMPT", job.attempt.to_string())
            .env("SWITCHYARD_RULE", &job.rule);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        for (name, pointer) in &self.env {
            if let Some(v) = job_doc.pointer(pointer).and_then(env_value) {
                cmd.env(name, v);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Permanent(format!("cannot run {}: {e}", self.argv[0])),
        };
        let pgid = child.id() as i32;
        let stdin = child.stdin.take();
        let event = serde_json::to_vec(&job.event).unwrap_or_default();
        // Fed from a thread: a program that does not read stdin must not block us.
        let feeder = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(&event);
            }
        });
        let out = drain(child.stdout.take().expect("piped"), self.max_output);
        let err = drain(child.stderr.take().expect("piped"), self.max_output);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Outcome::Retryable(format!("cannot wait for {}: {e}", self.argv[0]))
                }
            }
        };
        // The whole group goes, whatever happened: no orphan outlives a job.
        // SAFETY: killpg with the group id of the child we started.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.wait();
                let _ = feeder.join();
                let stderr = text(&err.join().unwrap_or_default());
                let _ = out.join();
                return Outcome::Retryable(format!(
                    "killed after {} ms (the deadline), with its process group; stderr: {}",
                    timeout.as_millis(),
                    stderr.trim()
                ));
            }
        };
        let _ = feeder.join();
        let stdout = text(&out.join().unwrap_or_default());
        let stderr = text(&err.join().unwrap_or_default());
        match status.code() {
            Some(0) => {
                self.host.debug(&format!("{} exited 0", self.argv[0]));
                Outcome::Done(Some(
                    json!({ "exit": 0, "stdout": stdout, "stderr": stderr }),
                ))
            }
            Some(code) if self.retry_exit_codes.contains(&code) => Outcome::Retryable(format!(
                "exit {code} (retryable); stderr: {}",
                stderr.trim()
            )),
            Some(code) => Outcome::Permanent(format!("exit {code}; stderr: {}", stderr.trim())),
            None => Outcome::Permanent(format!(
                "killed by signal {}; stderr: {}",
                status.signal().unwrap_or(0),
                stderr.trim()
            )),
        }
    }
}

switchyard_plugin_api::export_action!("exec", Exec);

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: "j1".into(),
            idempotency_key: "ev:rule:0".into(),
            action: "run".into(),
            rule: "rule".into(),
            attempt: 1,
            params: json!({"invoice": "inv_7"}),
            event: json!({"id": "ev", "type": "tight.invoiceViewed"}),
        }
    }

    fn exec(config: Value) -> Exec {
        Exec::create(Host::detached(), config).unwrap()
    }

    #[test]
    fn the_event_on_stdin_and_values_in_the_environment() {
        let e = exec(
            json!({"shell": "cat; echo \" $INVOICE $SWITCHYARD_IDEMPOTENCY_KEY\"",
                            "env": {"INVOICE": "/params/invoice"}}),
        );
        match e.execute(&job(), Duration::from_secs(5)) {
            Outcome::Done(Some(r)) => {
                let out = r["stdout"].as_str().unwrap();
                assert!(
                    out.starts_with(r#"{"id":"ev","type":"tight.invoiceViewed"}"#),
                    "{out}"
                );
                assert!(out.trim_end().ends_with("inv_7 ev:rule:0"), "{out}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_codes() {
        let run = |line: &str| exec(json!({"shell": line})).execute(&job(), Duration::from_secs(5));
        assert!(matches!(run("exit 75"), Outcome::Retryable(_)));
        assert!(
            matches!(run("echo oops >&2; exit 3"), Outcome::Permanent(m) if m.contains("exit 3") && m.contains("oops"))
        );
        assert!(matches!(run("kill -9 $$"), Outcome::Permanent(m) if m.contains("signal 9")));
        let missing = exec(json!({"command": ["/nonexistent/program"]}));
        assert!(matches!(
            missing.execute(&job(), Duration::from_secs(1)),
            Outcome::Permanent(_)
        ));
    }

    #[test]
    fn a_hanging_command_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // A child that would outlive its parent, then a parent that hangs.
        let line = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
        let started = Instant::now();
        let outcome = exec(json!({"shell": line})).execute(&job(), Duration::from_millis(300));
        assert!(
            matches!(outcome, Outcome::Retryable(ref m) if m.contains("killed")),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "the child {pid} was killed too");
    }

    #[test]
    fn output_is_bounded() {
        let e = exec(
            json!({"shell": "head -c 100000 /dev/zero | tr '\\\\0' x", "max_output_bytes": 1000}),
        );
        match e.execute(&job(), Duration::from_secs(5)) {
            Outcome::Done(Some(r)) => {
                let out = r["stdout"].as_str().unwrap();
                assert!(out.len() < 1100 && out.ends_with("…[cut]"), "{}", out.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_are_checked() {
        for (config, needle) in [
            (json!({}), "command"),
            (json!({"command": ["a"], "shell": "b"}), "not both"),
            (
                json!({"command": ["a"], "env": {"X": "params.x"}}),
                "JSON pointer",
            ),
            (json!({"command": ["a"], "colour": 1}), "colour"),
        ] {
            let err = Exec::create(Host::detached(), config).err().unwrap();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
