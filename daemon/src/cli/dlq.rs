//! `switchyard dlq list|redrive`.

use std::process::ExitCode;

use anyhow::Result;
use switchyard::admin::ops;

use super::args::*;
use super::{json_lines, table};

pub fn dlq(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List {
            config,
            limit,
            json,
        } => {
            let dead = super::operate::target(&config.config)?.dead_letters(limit)?;
            if json {
                json_lines(&dead)?;
            } else {
                let rows = dead
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.clone(),
                            j.event_id.clone(),
                            j.rule.clone(),
                            j.action.clone(),
                            j.attempts.to_string(),
                            j.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                let header = ["JOB", "EVENT", "RULE", "ACTION", "ATTEMPTS", "LAST ERROR"];
                println!("{}", table(&header, rows, &[4]));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive {
            config,
            id,
            all,
            action,
            error,
        } => {
            let which = ops::Redrive {
                id: if all { None } else { id },
                all,
                matching: switchyard::store::DeadFilter { action, error },
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
