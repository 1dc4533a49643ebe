//! `switchyard actions list|enable`.

use std::process::ExitCode;

use anyhow::Result;

use super::args::*;
use super::*;

pub fn actions(command: ActionsCommand) -> Result<ExitCode> {
    match command {
        ActionsCommand::List { config, json } => {
            let rows = super::operate::target(&config.config)?.actions()?;
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
            let done = super::operate::target(&config.config)?.enable_action(name)?;
            println!(
                "action {} enabled; {} waiting job(s) are due now",
                done.enabled, done.jobs_due
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
