//! A real PostgreSQL server for the tests: the one named by
//! `SWITCHYARD_TEST_POSTGRES` (a `postgres://` URL; `.ci/run` starts one),
//! else a private one this process starts once, from Debian's packages, on
//! 127.0.0.1 and a free port, in a temporary directory — stopped and removed
//! by a watchdog once this process is gone. Each test gets a database of
//! its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static SERVER: OnceLock<String> = OnceLock::new();

/// The server's URL, without a database.
pub fn server() -> &'static str {
    SERVER.get_or_init(|| match std::env::var("SWITCHYARD_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
        _ => start_private(),
    })
}

/// A new, empty database on the server; its URL.
pub fn fresh_database() -> String {
    let name = format!("sy_{}", ulid::Ulid::new().to_string().to_lowercase());
    sql(
        &format!("{}/postgres", server()),
        &format!("CREATE DATABASE {name}"),
    );
    format!("{}/{name}", server())
}

/// Runs SQL statements on a database.
pub fn sql(url: &str, statements: &str) {
    query(url, statements, |_| ());
}

/// Runs SQL and hands each row's columns, as text, to `row` (on a thread
/// of its own, so that async tests may call it too).
pub fn query(url: &str, statement: &str, mut row: impl FnMut(Vec<Option<String>>)) {
    let rows = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test server");
                tokio::spawn(conn);
                let mut rows = Vec::new();
                for message in client.simple_query(statement).await.expect(statement) {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = message {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                    }
                }
                rows
            })
        })
        .join()
        .expect("the query thread")
    });
    for r in rows {
        row(r);
    }
}

fn bin_dir() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(initdb) = on_path {
        let path = std::fs::canonicalize(&initdb).unwrap_or_else(|_| PathBuf::from(&initdb));
        return path.parent().expect("a directory").to_path_buf();
    }
    // Debian keeps them out of PATH, per major version.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
        .expect(
            "PostgreSQL's server (Debian: apt-get install postgresql), or SWITCHYARD_TEST_POSTGRES",
        )
}

/// Runs a server program as the `postgres` user when this process is root
/// (the server refuses to run as root).
fn as_server_user(program: &Path) -> Command {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_private() -> String {
    start_private_with(|_| String::new())
}

/// Starts a private server (see [`server`]) after `setup` has prepared its
/// data folder (as root, before the files are handed to the server's user);
/// `setup` returns more server options.
pub fn start_private_with(setup: impl FnOnce(&Path) -> String) -> String {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("switchyard-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let data = dir.join("data");
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the test server's directory");
    }
    let out = as_server_user(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = setup(&data);
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the test server's data");
    }
    let port = crate::common::free_port();
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300 -c fsync=off {extra}",
        dir.display()
    );
    let out = as_server_user(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "start"])
        .output()
        .expect("run pg_ctl");
    assert!(
        out.status.success(),
        "the test server did not start: {}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    );
    // Stopped and removed once this process is gone (checked each second,
    // for at most a day).
    let pg_ctl = bin.join("pg_ctl");
    let stop = format!(
        "i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 86400 ]; do sleep 1; i=$((i+1)); done; \
         {runuser}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        runuser = if root { "runuser -u postgres -- " } else { "" },
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        dir = dir.display(),
    );
    // Not waited for: it outlives this process on purpose.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &stop])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the test server's watchdog");
    format!("postgres://postgres@127.0.0.1:{port}")
}
