//! `switchyard actions list|enable|pause`.

use std::process::ExitCode;

use anyhow::Result;

use super::args::*;
use super::*;

pub fn actions(command: ActionsCommand) -> Result<ExitCode> {
    match command {
        ActionsCommand::List { config, json } => {
            let rows = super::operate::target(&config.config)?.actions()?;
            if json {
                json_lines(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows = rows
                .into_iter()
                .map(|row| {
                    let until = row
                        .until_ms
                        .filter(|_| row.state == "open" || row.state == "throttled")
                        .map(rfc3339_ms)
                        .unwrap_or_default();
                    vec![
                        row.name.clone(),
                        row.plugin.clone(),
                        row.rate_shown(),
                        row.budget_shown(),
                        row.waiting_for_rate.to_string(),
                        row.drain_shown(),
                        row.state,
                        row.failures.to_string(),
                        until,
                        row.reason.unwrap_or_default(),
                    ]
                })
                .collect();
            let header = [
                "ACTION", "PLUGIN", "RATE", "BUDGET", "WAITING", "DRAIN", "STATE", "FAILURES",
                "UNTIL", "REASON",
            ];
            println!("{}", table(&header, rows, &[3, 4, 7]));
            Ok(ExitCode::SUCCESS)
        }
        ActionsCommand::Pause { config, name } => {
            let done = super::operate::target(&config.config)?.pause_action(name)?;
            println!(
                "action {} paused; its jobs wait until `switchyard actions enable {}`",
                done.paused, done.paused
            );
            Ok(ExitCode::SUCCESS)
        }
        ActionsCommand::Enable { config, name } => {
            let done = super::operate::target(&config.config)?.enable_action(name)?;
            println!(
                "action {} enabled; {} waiting job(s) are due now",
                done.enabled, done.jobs_due
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
