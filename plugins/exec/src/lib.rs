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
//!
//! The program starts with a clean environment, never the daemon's (which
//! holds source secrets, SMTP passwords and `CREDENTIALS_DIRECTORY`): see
//! [`Environment`]; and with an open-file soft limit of 1,024 (the daemon
//! raises its own for its connections).

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
    /// Variables of the daemon's own environment passed through by name.
    #[serde(default)]
    inherit_env: Vec<String>,
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
    env: Environment,
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

/// What a program's environment is made of. Nothing else of the daemon's
/// environment reaches it, in this order (later wins):
/// 1. `PATH` (the daemon's, or `/usr/local/bin:/usr/bin:/bin`), `LANG`,
///    `LANGUAGE` and `LC_*` from the daemon;
/// 2. the variables named in `inherit_env`, from the daemon;
/// 3. `env`: values from the job, by JSON pointer;
/// 4. `SWITCHYARD_JOB_ID`, `SWITCHYARD_IDEMPOTENCY_KEY`, `SWITCHYARD_ATTEMPT`,
///    `SWITCHYARD_RULE`, which the config cannot name.
#[derive(Debug, Default)]
struct Environment {
    /// Taken from the daemon when the plugin instance is created.
    fixed: Vec<(String, String)>,
    /// Name → JSON pointer into the job.
    from_job: BTreeMap<String, String>,
}

/// Where a program looks for programs when the daemon has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Names that make the dynamic loader, libc or a shell load or run code,
/// or read files, of the value's choosing: refused in `env` and in
/// `inherit_env`. A name ending in `*` is a prefix.
const LOADER_NAMES: &[&str] = &[
    "LD_*",
    "DYLD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "BASHOPTS",
    "SHELLOPTS",
    "IFS",
    "PS4",
    "CDPATH",
];

/// Names that make an interpreter load code: refused as values from a job
/// (a webhook's data must not choose them), allowed through `inherit_env`.
const INTERPRETER_NAMES: &[&str] = &[
    "PATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHON*",
    "PERL5*",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
];

fn listed(name: &str, list: &[&str]) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *p,
    })
}

fn check_name(setting: &str, name: &str, from_job: bool) -> Result<(), String> {
    let portable = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!(
            "exec settings: {setting}: {name:?} is not an environment variable name (letters, digits and _)"
        ));
    }
    if name.starts_with("SWITCHYARD_") {
        return Err(format!(
            "exec settings: {setting}: {name} is reserved: SWITCHYARD_* variables are set by the daemon for each job"
        ));
    }
    if listed(name, LOADER_NAMES) {
        return Err(format!(
            "exec settings: {setting}: {name} is refused: the loader, libc or the shell acts on it"
        ));
    }
    if from_job && listed(name, INTERPRETER_NAMES) {
        return Err(format!(
            "exec settings: {setting}: {name} is refused as a value from a job: it chooses what code runs (pass the daemon's own with inherit_env)"
        ));
    }
    Ok(())
}

impl Environment {
    fn new(
        from_job: BTreeMap<String, String>,
        inherit: &[String],
        daemon: impl Iterator<Item = (String, String)>,
    ) -> Result<Environment, String> {
        for (name, pointer) in &from_job {
            check_name("env", name, true)?;
            if !pointer.starts_with('/') {
                return Err(format!(
                    "exec settings: env.{name} = {pointer:?} is not a JSON pointer into the job (e.g. \"/params/invoice\")"
                ));
            }
        }
        for name in inherit {
            check_name("inherit_env", name, false)?;
        }
        let daemon: BTreeMap<String, String> = daemon.collect();
        let mut fixed = vec![(
            "PATH".to_string(),
            daemon
                .get("PATH")
                .cloned()
                .unwrap_or_else(|| DEFAULT_PATH.into()),
        )];
        for (name, value) in &daemon {
            let locale = name == "LANG" || name == "LANGUAGE" || name.starts_with("LC_");
            if locale || inherit.contains(name) {
                fixed.push((name.clone(), value.clone()));
            }
        }
        Ok(Environment { fixed, from_job })
    }

    /// The variables for one job, or why the job cannot run.
    fn for_job(&self, job: &Job) -> Result<Vec<(String, String)>, String> {
        let doc = serde_json::to_value(job).unwrap_or(Value::Null);
        let mut vars = self.fixed.clone();
        for (name, pointer) in &self.from_job {
            if let Some(v) = doc.pointer(pointer).and_then(env_value) {
                if v.contains('\0') {
                    return Err(format!(
                        "env.{name}: the value at {pointer} contains a NUL byte, which an environment variable cannot hold"
                    ));
                }
                vars.push((name.clone(), v));
            }
        }
        vars.extend([
            ("SWITCHYARD_JOB_ID".to_string(), job.id.clone()),
            (
                "SWITCHYARD_IDEMPOTENCY_KEY".to_string(),
                job.idempotency_key.clone(),
            ),
            ("SWITCHYARD_ATTEMPT".to_string(), job.attempt.to_string()),
            ("SWITCHYARD_RULE".to_string(), job.rule.clone()),
        ]);
        Ok(vars)
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
        let env = Environment::new(
            c.env,
            &c.inherit_env,
            std::env::vars_os()
                .filter_map(|(n, v)| Some((n.into_string().ok()?, v.into_string().ok()?))),
        )?;
        // Said once here, from what the environment was made of.
        for name in &c.inherit_env {
            if !env.fixed.iter().any(|(n, _)| n == name) {
                host.warn(&format!(
                    "inherit_env: {name} is not set in the daemon's environment (or not UTF-8)"
                ));
            }
        }
        Ok(Exec {
            host,
            argv,
            env,
            retry_exit_codes: c.retry_exit_codes,
            max_output: c.max_output_bytes,
            working_dir: c.working_dir,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let vars = match self.env.for_job(job) {
            Ok(vars) => vars,
            Err(why) => return Outcome::Permanent(why),
        };
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .env_clear()
            .envs(vars);
        // The attempt's trace, for a program that traces too.
        if let Some(trace) = &job.trace {
            cmd.env("TRACEPARENT", &trace.traceparent);
        }
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        // The daemon raised its open-file soft limit for its connections;
        // the program gets the usual 1,024 back (select() breaks above it).
        // SAFETY: getrlimit and setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur > 1024 {
                    lim.rlim_cur = 1024;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
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
            trace: None,
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
        // SIGKILL was sent; the kernel ends the process a moment later.
        let alive = || {
            // SAFETY: signal 0 only asks whether the process exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            exists
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(), "the child {pid} was killed too");
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
    fn the_program_gets_a_clean_environment() {
        std::env::set_var("EXEC_TEST_SECRET", "hunter2-not-for-children");
        std::env::set_var("EXEC_TEST_PASSED", "passed-through");
        let e = exec(json!({"command": ["/usr/bin/env"],
                            "env": {"INVOICE": "/params/invoice"},
                            "inherit_env": ["EXEC_TEST_PASSED"]}));
        let Outcome::Done(Some(r)) = e.execute(&job(), Duration::from_secs(5)) else {
            panic!("env did not run");
        };
        let mut names: Vec<&str> = r["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(n, _)| n))
            .filter(|n| !n.starts_with("LC_") && *n != "LANG" && *n != "LANGUAGE")
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "EXEC_TEST_PASSED",
                "INVOICE",
                "PATH",
                "SWITCHYARD_ATTEMPT",
                "SWITCHYARD_IDEMPOTENCY_KEY",
                "SWITCHYARD_JOB_ID",
                "SWITCHYARD_RULE"
            ]
        );
        let out = r["stdout"].as_str().unwrap();
        assert!(out.contains("EXEC_TEST_PASSED=passed-through\n"), "{out}");
        assert!(out.contains("INVOICE=inv_7\n"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn the_program_gets_the_usual_open_file_limit() {
        let e = exec(json!({"shell": "ulimit -n"}));
        let Outcome::Done(Some(r)) = e.execute(&job(), Duration::from_secs(5)) else {
            panic!("sh did not run");
        };
        let limit: u64 = r["stdout"].as_str().unwrap().trim().parse().unwrap();
        assert!(limit <= 1024, "{limit}");
    }

    #[test]
    fn a_nul_byte_from_the_job_is_a_permanent_failure() {
        let e = exec(json!({"command": ["/bin/true"], "env": {"NOTE": "/params/note"}}));
        let mut j = job();
        j.params = json!({"note": "a\u{0}b"});
        match e.execute(&j, Duration::from_secs(5)) {
            Outcome::Permanent(m) => {
                assert!(m.contains("env.NOTE") && m.contains("NUL"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_the_loader_or_the_daemon_acts_on_are_refused() {
        for (config, needle) in [
            (
                json!({"env": {"LD_PRELOAD": "/params/x"}}),
                "LD_PRELOAD is refused",
            ),
            (
                json!({"inherit_env": ["LD_LIBRARY_PATH"]}),
                "LD_LIBRARY_PATH is refused",
            ),
            (
                json!({"env": {"BASH_ENV": "/params/x"}}),
                "BASH_ENV is refused",
            ),
            (json!({"inherit_env": ["GCONV_PATH"]}), "GCONV_PATH"),
            (json!({"env": {"SWITCHYARD_JOB_ID": "/id"}}), "reserved"),
            (json!({"inherit_env": ["SWITCHYARD_RULE"]}), "reserved"),
            (json!({"env": {"PATH": "/params/x"}}), "value from a job"),
            (
                json!({"env": {"NODE_OPTIONS": "/params/x"}}),
                "value from a job",
            ),
            (
                json!({"env": {"A=B": "/params/x"}}),
                "not an environment variable name",
            ),
            (
                json!({"inherit_env": [""]}),
                "not an environment variable name",
            ),
        ] {
            let mut config = config;
            config["command"] = json!(["/bin/true"]);
            let err = Exec::create(Host::detached(), config).err().unwrap();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // An interpreter's variable may come from the daemon, by name.
        assert!(Exec::create(
            Host::detached(),
            json!({"command": ["/bin/true"], "inherit_env": ["PYTHONPATH"]})
        )
        .is_ok());
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
