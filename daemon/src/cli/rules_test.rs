//! `switchyard rules test`: rules run on events with no side effects, and
//! the rules folder's test cases.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use switchyard::app::config::{self, Config};
use switchyard::event::Event;
use switchyard::rules::{testing, Rules};

use super::send::sample_events;

pub fn rules_test(
    path: &Path,
    files: &[PathBuf],
    ids: &[String],
    sample: Option<&[String]>,
    json: bool,
) -> Result<ExitCode> {
    let (config, _) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    let limits = switchyard::rules::Limits {
        timeout: config.rule_timeout,
        ..Default::default()
    };
    let engine = switchyard::rules::engine(&limits);
    let set = switchyard::rules::RuleSet::load_dir(&engine, &config.rules_dir)
        .map_err(|p| anyhow!("{}", switchyard::config::Problems(p)))?;
    let rules = Rules::new(engine, limits, config.rules_dir.clone(), set);
    warn_of_reads(&config, &rules);
    let events = given_events(&config, path, files, ids, sample)?;
    if events.is_empty() {
        return run_cases(&config, path, &rules);
    }
    let known = |name: &str| config.actions.contains_key(name);
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
    Ok(ExitCode::SUCCESS)
}

/// Reads of event fields the rules' types cannot have, as warnings on
/// stderr (the catalog made from the config's plugins; none if they do
/// not load).
fn warn_of_reads(config: &Config, rules: &Rules) {
    match switchyard::app::catalog_for(config) {
        Ok(catalog) => {
            for rule in rules.current().rules() {
                for w in switchyard::rules::reads::check(rule, &catalog) {
                    eprintln!("warning: {w}");
                }
            }
        }
        Err(e) => eprintln!("note: event fields are not checked: the plugins do not load ({e})"),
    }
}

/// The events given on the command line: files of JSON, stored events by
/// id, a provider's sample.
fn given_events(
    config: &Config,
    path: &Path,
    files: &[PathBuf],
    ids: &[String],
    sample: Option<&[String]>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        events.push(testing::event_from_json(value).map_err(|e| anyhow!("{}: {e}", f.display()))?);
    }
    if !ids.is_empty() {
        let target = super::operate::target(path)?;
        for id in ids {
            let envelope = target.show_event(id.clone())?["envelope"].take();
            events.push(serde_json::from_value(envelope).context("a stored envelope")?);
        }
    }
    if let Some([source, event]) = sample {
        events.extend(sample_events(config, path, source, event)?);
    }
    Ok(events)
}

/// The rules folder's test cases (`tests/*.json`), each run and compared
/// with what it expects.
fn run_cases(config: &Config, path: &Path, rules: &Rules) -> Result<ExitCode> {
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
        let result = case
            .as_ref()
            .map_err(|e| anyhow!("not a test case: {e}"))
            .and_then(|case| case_problems(config, path, rules, case));
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

/// What is wrong with one case's run: what it expects and did not get,
/// and calls to actions the config does not define.
fn case_problems(
    config: &Config,
    path: &Path,
    rules: &Rules,
    case: &testing::Case,
) -> Result<Vec<String>> {
    let events = match (&case.event, &case.sample) {
        (Some(_), None) => vec![testing::case_event(case)
            .expect("event is set")
            .map_err(|e| anyhow!(e))?],
        (None, Some(s)) => sample_events(config, path, &s.source, &s.event)?,
        _ => bail!("give either \"event\" or \"sample\""),
    };
    let mut runs = Vec::new();
    for e in &events {
        runs.extend(testing::run(rules, e).1);
    }
    let mut problems = testing::compare(&runs, case);
    for r in &runs {
        for c in &r.calls {
            if !config.actions.contains_key(&c.action) {
                problems.push(format!(
                    "rule {} calls action {:?}, which the config does not define",
                    r.rule, c.action
                ));
            }
        }
    }
    Ok(problems)
}
