//! `switchyard subscriptions plan|apply|list`: the webhooks each source
//! declares, made real at its provider. Runs in this process with the
//! source's provider plugin (no daemon needed): the plugin calls its
//! provider's API, `switchyard::subscriptions` decides what to do.
//!
//! Exit codes: 0 when every source was planned, listed or applied (a source
//! whose provider has no API is said and is not a failure); 1 when a
//! provider could not be reached or refused (`cannot plan`, `cannot list`),
//! when an `apply` step failed or was half done (a move that made the new
//! subscription but could not delete the old one), or when the config
//! cannot be read.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use switchyard::app::config::{self, Config};
use switchyard::host::Instance;
use switchyard::subscriptions::{self as subs, Provider as _, SourceApi};
use switchyard_plugin_api::{SubscriptionCall, SubscriptionError};

use super::args::{SubscriptionsArgs, SubscriptionsCommand};
use super::send::source_instance;

pub fn subscriptions(command: SubscriptionsCommand) -> Result<ExitCode> {
    match command {
        SubscriptionsCommand::Plan(a) => plan_or_apply(&a, false),
        SubscriptionsCommand::Apply(a) => plan_or_apply(&a, true),
        SubscriptionsCommand::List {
            config,
            source,
            json,
        } => list(&config.config, source.as_deref(), json),
    }
}

/// The sources asked about, each with its provider's instance.
fn sources(path: &Path, only: Option<&str>) -> Result<(Config, Vec<(String, Instance)>)> {
    let (config, _) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    let names: Vec<String> = match only {
        Some(name) => vec![name.to_string()],
        None => config.sources.keys().cloned().collect(),
    };
    if names.is_empty() {
        bail!("{} declares no sources", path.display());
    }
    let mut out = Vec::new();
    for name in names {
        let instance = source_instance(&config, path, &name)?;
        out.push((name, instance));
    }
    Ok((config, out))
}

/// A source's provider as the subscriptions reach it: its deadline and
/// the credentials scrubbed from what it answers.
fn source_api<'a>(config: &'a Config, name: &str, instance: &'a Instance) -> SourceApi<'a> {
    let sc = &config.sources[name];
    SourceApi {
        instance,
        timeout: sc.api_timeout,
        credentials: &sc.credentials,
    }
}

fn plan_or_apply(a: &SubscriptionsArgs, apply: bool) -> Result<ExitCode> {
    let (config, sources) = sources(&a.config.config, a.source.as_deref())?;
    let Some(public_url) = config.public_url.clone() else {
        bail!(
            "set public_url in {} (where providers reach this daemon, e.g. https://hooks.example.com): \
             each source's webhooks go to <public_url>/hooks/<source>",
            a.config.config.display()
        );
    };
    let mut failed = false;
    for (name, instance) in &sources {
        let api = source_api(&config, name, instance);
        let target = subs::target_url(&public_url, name);
        println!("{name} -> {}", subs::shown(&target));
        let plan = match subs::plan_with(&api, name, &target, a.prune) {
            Ok(plan) => plan,
            Err(SubscriptionError::Unsupported(how)) => {
                println!("  not managed: {how}");
                continue;
            }
            Err(e) => {
                println!("  cannot plan: {e}");
                failed = true;
                continue;
            }
        };
        if !apply {
            for step in &plan.steps {
                println!("  {}", subs::describe(step));
            }
            println!("  {} to change", plan.changes());
            continue;
        }
        let done = subs::apply(&api, &plan);
        for step in plan.steps.iter().filter(|s| !s.changes()) {
            println!("  {}", subs::describe(step));
        }
        for d in &done {
            let mark = match (&d.error, d.half_done()) {
                (None, _) => "",
                (Some(_), true) => "HALF     ",
                (Some(_), false) => "FAILED   ",
            };
            println!("  {mark}{}", d.outcome());
        }
        let tally = subs::Tally::of(&done);
        failed |= !tally.clean();
        println!("  {tally}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn list(path: &Path, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let (config, sources) = sources(path, only)?;
    let mut failed = false;
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    for (name, instance) in &sources {
        match source_api(&config, name, instance).call(&SubscriptionCall::List) {
            Ok(listed) => {
                for s in listed {
                    let ours = subs::is_ours(&s.target_url, name);
                    let status = if s.status.is_empty() {
                        s.state.as_str().to_string()
                    } else {
                        format!("{} ({})", s.state.as_str(), s.status)
                    };
                    rows.push(vec![
                        name.clone(),
                        s.id.clone().unwrap_or_default(),
                        s.events.join(","),
                        status,
                        if ours { "switchyard" } else { "other" }.to_string(),
                        subs::shown(&s.target_url),
                    ]);
                    let mut o = serde_json::to_value(&s)?;
                    o["source"] = name.clone().into();
                    o["target_url"] = subs::shown(&s.target_url).into();
                    o["made_by_switchyard"] = ours.into();
                    objects.push(o);
                }
            }
            Err(SubscriptionError::Unsupported(how)) if !json => {
                eprintln!("{name}: not managed: {how}");
            }
            Err(SubscriptionError::Unsupported(_)) => {}
            Err(e) => {
                eprintln!("{name}: cannot list: {e}");
                failed = true;
            }
        }
    }
    if json {
        super::json_lines(&objects)?;
    } else {
        println!(
            "{}",
            super::table(
                &["SOURCE", "ID", "EVENTS", "STATE", "MADE BY", "TARGET"],
                rows,
                &[]
            )
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
