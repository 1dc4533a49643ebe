//! `switchyard`: the command-line face of the daemon.
//!
//! A thin binary: it parses arguments (`cli::args`), sets up logging and
//! calls the command's file under `cli/`, which calls the library.

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: a webhook's small allocations are
/// freed on other threads than made them, which glibc's arenas handle
/// slowly (measured in bench/README.md). Plugins and SQLite keep glibc's:
/// nothing allocated on one side of the plugin ABI is freed on the other.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use cli::args::{Cli, Command, RulesCommand};

fn main() -> ExitCode {
    // The process's TLS (`send --to https://…`) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Cli::parse();
    let level = match args.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    cli::init_logging(args.log_format, level);
    let result = match args.command {
        Command::Run(c) => cli::run::run(&c.config),
        Command::Check(c) => cli::check::check(&c.config),
        Command::Send {
            config,
            source,
            event,
            to,
            print,
        } => cli::send::send(&config.config, &source, &event, to.as_deref(), print),
        Command::Events { command } => cli::events::events(command),
        Command::Replay { config, id } => cli::events::replay(&config.config, id),
        Command::Types { command } => cli::types::types(command),
        Command::Dlq { command } => cli::dlq::dlq(command),
        Command::Actions { command } => cli::actions::actions(command),
        Command::Subscriptions { command } => cli::subscriptions::subscriptions(command),
        Command::Listen(args) => cli::listen::listen(&args),
        Command::Reload(c) => cli::admin::admin_call(&c.config, "POST", "/v1/reload"),
        Command::Status(c) => cli::admin::admin_call(&c.config, "GET", "/v1/status"),
        Command::Rules {
            command:
                RulesCommand::Test {
                    config,
                    files,
                    ids,
                    sample,
                    json,
                },
        } => cli::rules_test::rules_test(&config.config, &files, &ids, sample.as_deref(), json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
