//! `switchyard`: the command-line face of the daemon.
//!
//! A thin binary: it parses arguments, sets up logging and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod cli;

use switchyard::config;
use switchyard::host::{Instance, Registry, Role};
use switchyard::ops;
use switchyard::store::{now_ms, EventFilter};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Self-hosted webhook event router: verify, route through rhai rules, act through plugins",
    propagate_version = true
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ConfigArg {
    /// The config file.
    #[arg(
        short,
        long,
        env = "SWITCHYARD_CONFIG",
        default_value = "/etc/switchyard/switchyard.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: receive webhooks, route them, act.
    Run(ConfigArg),
    /// Validate the config, load the plugins and compile the rules; list every problem.
    Check(ConfigArg),
    /// Post a correctly signed sample webhook for SOURCE's EVENT to the daemon.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// A source name from the config, e.g. `tight`.
        source: String,
        /// A sample event the source's provider knows, e.g. `invoiceViewed`.
        event: String,
        /// Where to post it; default: the config's listen address.
        #[arg(long)]
        to: Option<String>,
        /// Print the request instead of sending it.
        #[arg(long)]
        print: bool,
    },
    /// Look at stored events (through the running daemon's admin API when
    /// the config has one, else in the store).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Route a stored event again through the current rules.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The event id.
        id: String,
    },
    /// Dead letters: jobs that failed for good.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Reload the running daemon's config, plugins and rules (through the
    /// admin API; `systemctl reload switchyard` does the same with SIGHUP).
    Reload(ConfigArg),
    /// What the running daemon runs: sources, rules, actions, backlog (admin API).
    Status(ConfigArg),
    /// Actions: their circuit breakers and pauses (through the running
    /// daemon's admin API when the config has one, else in the store).
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
    /// Rules: try them before they go live.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum ActionsCommand {
    /// Every action of the config with its gate: closed (running), open
    /// (paused by the breaker), half-open, or disabled (the target said 410).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Resume a disabled or paused action; its waiting jobs become due now.
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        /// The action's name in the config.
        name: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run the rules on events and print what they would do, with no side
    /// effects. With no event given, run the test cases in <rules_dir>/tests/
    /// and fail on a mismatch.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// Event files: JSON, a whole envelope or just `type` and `data`.
        files: Vec<PathBuf>,
        /// A stored event, by id (repeatable).
        #[arg(long = "event", value_name = "ID")]
        ids: Vec<String>,
        /// A provider's sample, verified and normalized as a delivery would be.
        #[arg(long, num_args = 2, value_names = ["SOURCE", "EVENT"])]
        sample: Option<Vec<String>>,
        /// Print the rule runs as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List stored events, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only of this type; a trailing `*` matches a prefix (`tight.*`).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only received since: a time (RFC 3339) or an age (`1h`, `2d`).
        #[arg(long)]
        since: Option<String>,
        /// Only received before: a time (RFC 3339) or an age (`1h`, `2d`).
        #[arg(long)]
        until: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one event: envelope, request, rule runs, jobs and attempts.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The event id.
        id: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the queue, due now.
    Redrive {
        #[command(flatten)]
        config: ConfigArg,
        /// The job id of one dead letter.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    // The process's TLS (`send --to https://…`) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, level);
    let result = match cli.command {
        Command::Run(c) => run(&c.config),
        Command::Check(c) => check(&c.config),
        Command::Send {
            config,
            source,
            event,
            to,
            print,
        } => send(&config.config, &source, &event, to.as_deref(), print),
        Command::Events { command } => events(command),
        Command::Replay { config, id } => replay(&config.config, id),
        Command::Dlq { command } => dlq(command),
        Command::Actions { command } => actions(command),
        Command::Reload(c) => admin_call(&c.config, "POST", "/v1/reload"),
        Command::Status(c) => admin_call(&c.config, "GET", "/v1/status"),
        Command::Rules {
            command:
                RulesCommand::Test {
                    config,
                    files,
                    ids,
                    sample,
                    json,
                },
        } => rules_test(&config.config, &files, &ids, sample.as_deref(), json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (journald under systemd). `SWITCHYARD_LOG` (or
/// `RUST_LOG`) sets the filter; the daemon logs at info, other commands at warn.
fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(path: &Path) -> Result<ExitCode> {
    let (config, warnings) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        switchyard::server::run(config, shutdown_signal(), |_| {})
            .await
            .map_err(|p| anyhow!("{p}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C. The handlers are in place when this returns, before
/// the daemon says it is up: a signal right after start stops it cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("interrupted: shutting down"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// A time given as RFC 3339, or as an age (`90m`, `2d`) before now.
fn parse_when(text: &str) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let age = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time nor an age like 1h"))?;
    Ok(now_ms() - age.as_millis() as i64)
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(switchyard::event::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn replay(config: &Path, id: String) -> Result<ExitCode> {
    let done = cli::operate::target(config)?.replay(id)?;
    println!(
        "event {} will be routed again through the current rules",
        done.replayed
    );
    Ok(ExitCode::SUCCESS)
}

fn events(command: EventsCommand) -> Result<ExitCode> {
    match command {
        EventsCommand::List {
            config,
            source,
            kind,
            since,
            until,
            limit,
            json,
        } => {
            let filter = EventFilter {
                source,
                kind,
                since_ms: since.as_deref().map(parse_when).transpose()?,
                until_ms: until.as_deref().map(parse_when).transpose()?,
                limit,
            };
            {
                let list = cli::operate::target(&config.config)?.list_events(filter)?;
                if json {
                    for e in &list {
                        println!("{}", serde_json::to_string(e)?);
                    }
                } else {
                    println!(
                        "{:<26}  {:<24}  {:<12}  {:<32}  {:<7}  JOBS  DEAD  DUPS",
                        "ID", "RECEIVED", "SOURCE", "TYPE", "STATE"
                    );
                    for e in &list {
                        println!(
                            "{:<26}  {:<24}  {:<12}  {:<32}  {:<7}  {:>4}  {:>4}  {:>4}",
                            e.id,
                            rfc3339_ms(e.received_at_ms),
                            e.source,
                            e.kind,
                            e.state,
                            e.jobs,
                            e.jobs_dead,
                            e.duplicates
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
        EventsCommand::Show { config, id } => {
            let detail = cli::operate::target(&config.config)?.show_event(id)?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dlq(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List {
            config,
            limit,
            json,
        } => {
            let dead = cli::operate::target(&config.config)?.dead_letters(limit)?;
            if json {
                for j in &dead {
                    println!("{}", serde_json::to_string(j)?);
                }
            } else {
                println!(
                    "{:<26}  {:<26}  {:<20}  {:<20}  {:>8}  LAST ERROR",
                    "JOB", "EVENT", "RULE", "ACTION", "ATTEMPTS"
                );
                for j in &dead {
                    println!(
                        "{:<26}  {:<26}  {:<20}  {:<20}  {:>8}  {}",
                        j.id,
                        j.event_id,
                        j.rule,
                        j.action,
                        j.attempts,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive { config, id, all } => {
            let which = ops::Redrive {
                id: if all { None } else { id },
                all,
            };
            let n = cli::operate::target(&config.config)?
                .redrive(which)?
                .redriven;
            println!(
                "{n} dead letter{} sent back to the queue",
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &Path) -> Result<ExitCode> {
    match switchyard::check(path) {
        Ok(report) => {
            for line in &report.summary {
                println!("{line}");
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!("{}: OK", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems.0 {
                println!("error: {p}");
            }
            println!(
                "{}: {} problem{}",
                path.display(),
                problems.0.len(),
                if problems.0.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The provider instance of a configured source, made as the daemon makes it.
fn source_instance(config: &config::Config, path: &Path, source: &str) -> Result<Instance> {
    let Some(sc) = config.sources.get(source) else {
        bail!(
            "no source {source:?} in {} (sources: {})",
            path.display(),
            config
                .sources
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let registry = Registry::load_dir(&config.plugin_dir).map_err(|p| anyhow!("{p}"))?;
    let plugin = registry
        .plugins
        .get(&sc.plugin)
        .filter(|p| p.role == Role::Provider)
        .ok_or_else(|| {
            anyhow!(
                "no provider plugin {:?} in {}",
                sc.plugin,
                config.plugin_dir.display()
            )
        })?
        .clone();
    Ok(Instance::create(
        plugin,
        &format!("source {source}"),
        &sc.settings,
    )?)
}

fn send(path: &Path, source: &str, event: &str, to: Option<&str>, print: bool) -> Result<ExitCode> {
    let (config, _) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    let instance = source_instance(&config, path, source)?;
    let sample = instance.sample(event)?;
    let base = match to {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}/hooks/{source}")
        }
    };
    let url = if sample.query.is_empty() {
        base
    } else {
        format!("{base}?{}", sample.query)
    };
    if print {
        println!("{} {url}", sample.method);
        for (n, v) in &sample.headers {
            println!("{n}: {v}");
        }
        println!();
        println!("{}", sample.body);
        return Ok(ExitCode::SUCCESS);
    }
    let method = reqwest::Method::from_bytes(sample.method.as_bytes()).context("sample method")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut request = client.request(method, &url).body(sample.body);
    for (n, v) in &sample.headers {
        request = request.header(n, v);
    }
    let response = request
        .send()
        .with_context(|| format!("cannot post to {url}"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    println!("{status} {text}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The events a provider's sample becomes: signed by the plugin, verified
/// and normalized by it, completed by the host.
fn sample_events(
    config: &config::Config,
    path: &Path,
    source: &str,
    event: &str,
) -> Result<Vec<switchyard::event::Event>> {
    let instance = source_instance(config, path, source)?;
    let sample = instance.sample(event)?;
    let request = switchyard::host::OwnedRequest {
        method: sample.method.clone(),
        path: String::new(),
        query: sample.query.clone(),
        headers: sample
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect(),
        remote_addr: "127.0.0.1".into(),
        body: bytes::Bytes::from(sample.body.clone()),
    };
    let drafts = instance
        .verify(&request)?
        .map_err(|r| anyhow!("the {source} plugin refused its own sample: {r}"))?;
    let provider = instance.plugin().name.clone();
    let now = time::OffsetDateTime::now_utc();
    Ok(drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            switchyard::event::Event::from_draft(d, source, &provider, &request.body, i, now)
        })
        .collect())
}

fn rules_test(
    path: &Path,
    files: &[PathBuf],
    ids: &[String],
    sample: Option<&[String]>,
    json: bool,
) -> Result<ExitCode> {
    use switchyard::rules::testing;
    let (config, _) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    let limits = switchyard::rules::Limits {
        timeout: config.rule_timeout,
        ..Default::default()
    };
    let engine = switchyard::rules::engine(&limits);
    let set = switchyard::rules::RuleSet::load_dir(&engine, &config.rules_dir)
        .map_err(|p| anyhow!("{}", switchyard::config::Problems(p)))?;
    let rules = switchyard::rules::Rules::new(engine, limits, config.rules_dir.clone(), set);
    let known = |name: &str| config.actions.contains_key(name);

    let mut events = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        events.push(testing::event_from_json(value).map_err(|e| anyhow!("{}: {e}", f.display()))?);
    }
    if !ids.is_empty() {
        let target = cli::operate::target(path)?;
        let mut found = Vec::new();
        for id in ids {
            found.push(target.show_event(id.clone())?["envelope"].take());
        }
        for v in found {
            events.push(serde_json::from_value(v).context("a stored envelope")?);
        }
    }
    if let Some([source, event]) = sample {
        events.extend(sample_events(&config, path, source, event)?);
    }

    if !events.is_empty() {
        for event in &events {
            let (_, runs) = testing::run(&rules, event);
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&serde_json::json!({"event": event, "runs": runs}))?
                );
            } else {
                print!("{}", testing::describe(&runs, event, &known));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let cases = testing::load_cases(&config.rules_dir).map_err(|e| anyhow!(e))?;
    if cases.is_empty() {
        println!(
            "no test cases in {}/tests/ (and no events given; see `switchyard rules test --help`)",
            config.rules_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for (name, case) in &cases {
        let result: Result<Vec<String>> = (|| {
            let case = case.as_ref().map_err(|e| anyhow!("not a test case: {e}"))?;
            let events = match (&case.event, &case.sample) {
                (Some(_), None) => vec![testing::case_event(case)
                    .expect("event is set")
                    .map_err(|e| anyhow!(e))?],
                (None, Some(s)) => sample_events(&config, path, &s.source, &s.event)?,
                _ => bail!("give either \"event\" or \"sample\""),
            };
            let mut runs = Vec::new();
            for e in &events {
                runs.extend(testing::run(&rules, e).1);
            }
            let mut problems = testing::compare(&runs, case);
            for r in &runs {
                for c in &r.calls {
                    if !known(&c.action) {
                        problems.push(format!(
                            "rule {} calls action {:?}, which the config does not define",
                            r.rule, c.action
                        ));
                    }
                }
            }
            Ok(problems)
        })();
        let description = case
            .as_ref()
            .ok()
            .and_then(|c| c.description.clone())
            .map(|d| format!(" — {d}"))
            .unwrap_or_default();
        match result {
            Ok(p) if p.is_empty() => println!("ok      {name}{description}"),
            Ok(p) => {
                failed += 1;
                println!("FAILED  {name}{description}");
                for line in p {
                    println!("        {line}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAILED  {name}{description}\n        {e:#}");
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn actions(command: ActionsCommand) -> Result<ExitCode> {
    match command {
        ActionsCommand::List { config, json } => {
            let rows = cli::operate::target(&config.config)?.actions()?;
            if !json {
                println!(
                    "{:<24}  {:<10}  {:>8}  {:<24}  REASON",
                    "ACTION", "STATE", "FAILURES", "UNTIL"
                );
            }
            for row in rows {
                if json {
                    println!("{}", serde_json::to_string(&row)?);
                } else {
                    let until = row
                        .until_ms
                        .filter(|_| row.state == "open")
                        .map(rfc3339_ms)
                        .unwrap_or_default();
                    println!(
                        "{:<24}  {:<10}  {:>8}  {:<24}  {}",
                        row.name,
                        row.state,
                        row.failures,
                        until,
                        row.reason.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ActionsCommand::Enable { config, name } => {
            let done = cli::operate::target(&config.config)?.enable_action(name)?;
            println!(
                "action {} enabled; {} waiting job(s) are due now",
                done.enabled, done.jobs_due
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Calls the running daemon's admin API (`[admin]` in the config) and prints
/// the answer.
fn admin_call(path: &Path, method: &str, api_path: &str) -> Result<ExitCode> {
    let partial = config::load_partial(path).map_err(|p| anyhow!("{p}"))?;
    let Some(api) = cli::operate::api(&partial.config) else {
        bail!(
            "{} has no [admin] section: the command talks to the daemon's admin API \
             (or use `systemctl reload switchyard` / kill -HUP for a reload)",
            path.display()
        );
    };
    let (ok, body) = api.send(method, api_path, None)?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
