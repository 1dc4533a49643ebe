use super::*;
use crate::config::line_col;

const GOOD: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "data"
plugin_dir = "plugins"
rules_dir = "rules"

[sources.tight]
plugin = "tight"
secret = { env = "SWITCHYARD_TEST_SECRET_A" }
tolerance_secs = 60
redact_headers = ["X-Auth"]

[actions.notify-owner]
plugin = "file"
path = "/tmp/x.jsonl"
concurrency = 2
"#;

#[test]
fn parses_and_resolves_env_secrets() {
    std::env::set_var("SWITCHYARD_TEST_SECRET_A", "s3cr3t");
    let (config, warnings) =
        parse(GOOD, Some(Path::new("/etc/switchyard/switchyard.toml"))).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.rules_dir, PathBuf::from("/etc/switchyard/rules"));
    let source = &config.sources["tight"];
    assert_eq!(source.plugin, "tight");
    assert_eq!(source.settings["secret"], "s3cr3t");
    assert_eq!(source.settings["tolerance_secs"], 60);
    assert!(source.settings.get("plugin").is_none());
    assert!(source.settings.get("redact_headers").is_none());
    assert_eq!(source.redact_headers, ["X-Auth"]);
    assert_eq!(source.location, "/etc/switchyard/switchyard.toml:7");
    let action = &config.actions["notify-owner"];
    assert_eq!(action.concurrency, 2);
    assert!(action.settings.get("concurrency").is_none());
    assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
}

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let text = GOOD.replace(
        "rules_dir = \"rules\"",
        "rules_dir = \"rules\"\nlisten_port = 9",
    );
    let err = parse(&text, Some(Path::new("s.toml"))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("listen_port"), "{msg}");
    assert!(msg.starts_with("s.toml:6:"), "{msg}");
}

#[test]
fn missing_env_and_file_secrets_are_reported_without_values() {
    let text = r#"
listen = "127.0.0.1:0"
data_dir = "d"
plugin_dir = "p"
rules_dir = "r"
[sources.a]
plugin = "tight"
secret = { env = "SWITCHYARD_TEST_SURELY_UNSET" }
[sources.b]
plugin = "tight"
secret = { file = "/nonexistent/secret" }
[sources.c]
tolerance = 1
"#;
    let err = parse(text, None).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.0.len(), 3, "{msg}");
    assert!(msg.contains("SWITCHYARD_TEST_SURELY_UNSET"), "{msg}");
    assert!(msg.contains("/nonexistent/secret"), "{msg}");
    assert!(msg.contains("sources.c has no `plugin` key"), "{msg}");
    // Each at the line of the setting it names, not its table's header.
    assert!(msg.contains("<config>:8: sources.a.secret"), "{msg}");
    assert!(msg.contains("<config>:11: sources.b.secret"), "{msg}");
    assert!(msg.contains("<config>:12: sources.c has no"), "{msg}");
}

#[test]
fn literal_secrets_are_warned_about_and_file_secrets_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("s");
    std::fs::write(&secret_file, "from-file\n").unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "d"
plugin_dir = "p"
rules_dir = "r"
[sources.a]
plugin = "tight"
secret = "literal-one"
[sources.b]
plugin = "tight"
secret = {{ file = "{}" }}
"#,
        secret_file.display()
    );
    let (config, warnings) = parse(&text, None).unwrap();
    assert_eq!(config.sources["b"].settings["secret"], "from-file");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("sources.a.secret"));
    assert!(!warnings[0].message.contains("literal-one"));
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn http_limits_default_and_are_checked() {
    std::env::set_var("SWITCHYARD_TEST_SECRET_A", "s3cr3t");
    let (config, _) = parse(GOOD, None).unwrap();
    assert_eq!(config.http, HttpLimits::default());
    assert_eq!(config.http.header_timeout, Duration::from_secs(10));
    assert_eq!(config.http.body_timeout, Duration::from_secs(30));

    let text = format!(
        "{GOOD}\n[http]\nheader_timeout = \"2s\"\nidle_timeout = \"1m\"\nmax_connections = 50\n\n[admin]\nlisten = \"127.0.0.1:8081\"\ntoken = \"0123456789abcdef\"\nmax_connections = 3\n"
    );
    let (config, _) = parse(&text, None).unwrap();
    assert_eq!(config.http.header_timeout, Duration::from_secs(2));
    assert_eq!(config.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.http.max_connections, 50);
    assert_eq!(config.http.write_timeout, Duration::from_secs(30));
    assert_eq!(config.admin.unwrap().max_connections, 3);

    // A value of the wrong form stops the reading at its line and column.
    let bad = format!("{GOOD}\n[http]\nheader_timeout = \"soon\"\nbody_timeout = \"1ms\"\n");
    let problems = parse(&bad, None).unwrap_err().to_string();
    assert!(
        problems.contains("http.header_timeout: \"soon\" is not a duration"),
        "{problems}"
    );
    assert!(problems.starts_with("<config>:19:18:"), "{problems}");
    assert!(
        !problems.contains("http.header_timeout must be"),
        "one problem per setting: {problems}"
    );
    // Values out of range are all reported together.
    let bad =
        format!("{GOOD}\n[http]\nbody_timeout = \"1ms\"\nmax_headers = 0\nmax_header_bytes = 10\n");
    let problems = parse(&bad, None).unwrap_err().to_string();
    assert!(
        problems.contains("http.body_timeout must be at least 100ms"),
        "{problems}"
    );
    assert!(
        problems.contains("http.max_headers must be at least 1"),
        "{problems}"
    );
    assert!(
        problems.contains("http.max_header_bytes must be at least 1024"),
        "{problems}"
    );
    let typo = format!("{GOOD}\n[http]\nheader_timout = \"5s\"\n");
    assert!(parse(&typo, None)
        .unwrap_err()
        .to_string()
        .contains("unknown field `header_timout`"));
}

#[test]
fn each_sections_problems_name_the_setting() {
    std::env::set_var("SWITCHYARD_TEST_SECRET_A", "s3cr3t");
    let problem = |extra: &str| {
        parse(&format!("{GOOD}{extra}"), Some(Path::new("s.toml")))
            .unwrap_err()
            .to_string()
    };
    let p = problem("\n[store]\nretention = \"a while\"\n");
    assert!(
        p.starts_with("s.toml:19:13: store.retention: \"a while\" is not a duration"),
        "{p}"
    );
    let p = problem("\n[store]\nkeep = \"30d\"\n");
    assert!(p.contains("unknown field `keep`"), "{p}");
    let p = problem("\n[delivery]\nretry_schedule = [\"5s\", \"soon\"]\n");
    assert!(
        p.contains("delivery.retry_schedule: [1]: \"soon\" is not a duration"),
        "{p}"
    );
    let p = problem("\n[delivery]\njitter = 1.5\n");
    assert!(
        p.contains("delivery.jitter must be at least 0 and below 1"),
        "{p}"
    );

    // Sources and actions: every table's problems, each at its setting's
    // line (not the table's header: 7 and 13).
    let text = GOOD
        .replace(
            "redact_headers = [\"X-Auth\"]",
            "allow_ips = [\"10.0.0.0/8\", \"nowhere\"]",
        )
        .replace(
            "concurrency = 2",
            "concurrency = 0\nbreaker_cooldown = \"later\"",
        );
    let p = parse(&text, Some(Path::new("s.toml"))).unwrap_err();
    let all = p.to_string();
    assert_eq!(p.0.len(), 2, "{all}");
    assert!(
        all.contains("s.toml:11: sources.tight.allow_ips: \"nowhere\" is not an IP address"),
        "{all}"
    );
    assert!(
        all.contains(
            "s.toml:17: actions.notify-owner.breaker_cooldown: \"later\" is not a duration"
        ),
        "{all}"
    );
    let text = GOOD.replace("concurrency = 2", "concurrency = 0\norder_by = \"\"");
    let all = parse(&text, None).unwrap_err().to_string();
    assert!(
        all.contains("actions.notify-owner.concurrency must be at least 1"),
        "{all}"
    );
    assert!(
        all.contains("actions.notify-owner.order_by must name a parameter"),
        "{all}"
    );
}

#[test]
fn a_shared_store_takes_a_postgres_url_and_a_password_reference() {
    std::env::set_var("SWITCHYARD_TEST_SECRET_A", "s3cr3t");
    std::env::set_var("SWITCHYARD_TEST_PG_PASSWORD", "pg-pass");
    let with = |store: &str| parse(&format!("{GOOD}\n{store}"), None);
    let (config, warnings) = with(
        "[store]\nurl = \"postgres://switchyard@db:5432/switchyard\"\npassword = { env = \"SWITCHYARD_TEST_PG_PASSWORD\" }",
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let store = &config.store;
    assert_eq!(
        store.password.as_ref().and_then(|p| p.value()),
        Some("pg-pass")
    );
    assert!(
        !format!("{config:?}").contains("pg-pass"),
        "the password is never shown"
    );
    assert_eq!(store.place(), "postgres://switchyard@db:5432/switchyard");

    // A password in the URL works, is warned about and never shown.
    let (config, warnings) = with("[store]\nurl = \"postgres://sy:hunter2@db/sy\"").unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!warnings[0].message.contains("hunter2"));
    assert_eq!(config.store.place(), "postgres://sy:***@db/sy");

    let wrong = |store: &str| with(store).unwrap_err().to_string();
    assert!(
        wrong("[store]\nurl = \"mysql://db/sy\"").contains("store.url must be a postgres:// URL")
    );
    assert!(wrong("[store]\npassword = \"x\"").contains("store.password needs store.url"));
    assert!(wrong(
        "[store]\nurl = \"postgres://db/sy\"\npassword = { env = \"SWITCHYARD_TEST_UNSET_VAR\" }"
    )
    .contains("SWITCHYARD_TEST_UNSET_VAR"));
}

#[test]
fn public_url_and_watch_are_checked() {
    std::env::set_var("SWITCHYARD_TEST_SECRET_A", "s3cr3t");
    let with = |top: &str, source: &str| {
        let text = GOOD
            .replace(
                "rules_dir = \"rules\"",
                &format!("rules_dir = \"rules\"\n{top}"),
            )
            .replace(
                "tolerance_secs = 60",
                &format!("tolerance_secs = 60\n{source}"),
            );
        parse(&text, Some(Path::new("s.toml")))
    };
    let (config, _) = with(
        "public_url = \"https://hooks.example.com/\"",
        "watch = \"15m\"\nreenable = true\n[sources.tight.subscription]\nx = 1",
    )
    .unwrap();
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://hooks.example.com")
    );
    let tight = &config.sources["tight"];
    assert_eq!(tight.watch, Some(Duration::from_secs(900)));
    assert!(tight.reenable);
    assert!(tight.settings.get("watch").is_none());
    assert_eq!(tight.settings["subscription"]["x"], 1);

    let err = with("", "watch = \"15m\"").unwrap_err().to_string();
    assert!(
        err.contains("sources.tight.watch needs public_url"),
        "{err}"
    );
    let err = with("public_url = \"hooks.example.com\"", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("public_url must be an http(s) URL"), "{err}");
    let err = with("public_url = \"https://h\"", "watch = \"10ms\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("watch must be at least 1s"), "{err}");
}
