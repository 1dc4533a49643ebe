//! The command line: every command, its arguments and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Self-hosted webhook event router: verify, route through rhai rules, act through plugins",
    propagate_version = true
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        short,
        long,
        env = "SWITCHYARD_CONFIG",
        default_value = "/etc/switchyard/switchyard.toml"
    )]
    pub config: PathBuf,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// The event types each source's provider sends (its catalog, with
    /// JSON Schemas), what arrived of them, and where it drifted.
    Types {
        #[command(subcommand)]
        command: TypesCommand,
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
    /// Develop against live traffic: a running Switchyard's events, as
    /// they are stored, posted to a local endpoint, signed per Standard
    /// Webhooks under a secret printed at start. Only reads.
    Listen(ListenArgs),
    /// The providers' side: make the webhooks each source declares
    /// (`[sources.NAME.subscription]`) real at its provider (Teal,
    /// Tripletex), pointed at `<public_url>/hooks/NAME`.
    Subscriptions {
        #[command(subcommand)]
        command: SubscriptionsCommand,
    },
}

#[derive(Args)]
pub struct ListenArgs {
    /// The running Switchyard's admin API, e.g. https://switchyard.example.com:8081
    #[arg(long)]
    pub from: String,
    /// A file holding a token of its `[admin]` (`read_only_token` is enough).
    #[arg(long)]
    pub token_file: std::path::PathBuf,
    /// Where to post the events: a URL, or TYPE_GLOB=URL for the types it
    /// matches (several; the first that matches takes an event).
    #[arg(long = "forward-to")]
    pub forward_to: Vec<String>,
    /// A local rules folder to try on each event, printed beside what the
    /// live rules did with it (no action runs); read again when it changes.
    #[arg(long)]
    pub rules: Option<std::path::PathBuf>,
    /// Run the local rules' calls for real, on the actions of `--config`.
    #[arg(long, requires = "config")]
    pub run_actions: bool,
    /// A local config whose actions `--run-actions` runs the calls on.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Only events of these types (a glob: `tight.*`).
    #[arg(long)]
    pub events: Option<String>,
    /// Only events of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// First the events stored since then (an age like 1h, or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// The signing secret (`whsec_…`); default: a new one, printed.
    #[arg(long)]
    pub secret: Option<String>,
}

#[derive(Args)]
pub struct SubscriptionsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One source; default: every source.
    pub source: Option<String>,
    /// Also delete the provider's subscriptions that Switchyard did not
    /// make (their target is not `/hooks/SOURCE`).
    #[arg(long)]
    pub prune: bool,
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// What differs between the config and the provider, and what `apply`
    /// would do about it. Changes nothing.
    Plan(SubscriptionsArgs),
    /// Make the provider match the config: create, move (to a new
    /// public_url), switch on again, delete what is no longer declared;
    /// prints what it did.
    Apply(SubscriptionsArgs),
    /// The provider's subscriptions as it shows them, with their state.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// One source; default: every source.
        source: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ActionsCommand {
    /// Every action of the config with its gate: closed (running), open
    /// (paused by the breaker), half-open, throttled (the target said
    /// Retry-After), or disabled (the target said 410).
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
    /// Pause an action by hand: its jobs wait, none lost, until `enable`.
    Pause {
        #[command(flatten)]
        config: ConfigArg,
        /// The action's name in the config.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum RulesCommand {
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
pub enum EventsCommand {
    /// List stored events, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only of this type, or of a glob of types: `*` any characters, `?` one (`tight.*`, `*.invoiceViewed`).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only received since: a time (RFC 3339) or an age (`1h`, `2d`).
        #[arg(long)]
        since: Option<String>,
        /// Only received before: a time (RFC 3339) or an age (`1h`, `2d`).
        #[arg(long)]
        until: Option<String>,
        /// Only in this state: pending, routed, stale, dead (a job gave up),
        /// handshake (a provider checking the endpoint, never routed), or
        /// held (a strict source's event that drifted from its schema).
        #[arg(long)]
        state: Option<String>,
        /// Only where a field of the event has this value:
        /// `data.invoice.id=inv_1` (compared as text).
        #[arg(long, value_name = "PATH=VALUE")]
        field: Option<String>,
        /// Only older than this event id (the next page).
        #[arg(long, value_name = "ID")]
        before: Option<String>,
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
    /// Route held events (a strict source's events that drifted from their
    /// type's schema) as they are.
    Release {
        #[command(flatten)]
        config: ConfigArg,
        /// One held event.
        #[arg(required_unless_present_any = ["source", "all"])]
        id: Option<String>,
        /// Every held event of this source.
        #[arg(long, conflicts_with = "id")]
        source: Option<String>,
        /// Every held event.
        #[arg(long, conflicts_with_all = ["id", "source"])]
        all: bool,
    },
}

#[derive(Subcommand)]
pub enum TypesCommand {
    /// Each source's event types: declared by its provider, learned, or
    /// undeclared; how many arrived (last hour, all time), last seen, drift.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this source's.
        #[arg(long)]
        source: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One type: its schema, a sample (its last event's data), and its
    /// drift with the first and last event that showed it.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The source, e.g. `tight`.
        source: String,
        /// The type, e.g. `tight.invoiceViewed`.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// The whole as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
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
        /// Every dead letter (or, with --action/--error, every one matching).
        #[arg(long)]
        all: bool,
        /// With --all: only this action's.
        #[arg(long, requires = "all")]
        action: Option<String>,
        /// With --all: only those whose last error contains this text.
        #[arg(long, requires = "all")]
        error: Option<String>,
    },
}
