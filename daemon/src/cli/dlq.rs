//! `switchyard dlq list|redrive`.

use std::process::ExitCode;

use anyhow::Result;
use switchyard::ops;

use super::args::*;

pub fn dlq(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List {
            config,
            limit,
            json,
        } => {
            let dead = super::operate::target(&config.config)?.dead_letters(limit)?;
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
            let n = super::operate::target(&config.config)?
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
