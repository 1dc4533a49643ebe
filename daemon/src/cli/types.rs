//! `switchyard types list|show`: each source's event types, their schemas,
//! what arrived of them and where it drifted.

use std::process::ExitCode;

use anyhow::Result;

use super::args::TypesCommand;
use super::{json_lines, rfc3339_ms, table};

pub fn types(command: TypesCommand) -> Result<ExitCode> {
    match command {
        TypesCommand::List {
            config,
            source,
            json,
        } => {
            let list = super::operate::target(&config.config)?.types(source)?;
            if json {
                json_lines(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows = list
                .iter()
                .map(|t| {
                    vec![
                        t.source.clone(),
                        t.kind.clone(),
                        t.known_as.clone(),
                        t.last_hour.to_string(),
                        t.total.to_string(),
                        t.last_seen_ms.map_or("-".into(), rfc3339_ms),
                        match t.drift {
                            0 => "-".into(),
                            n => format!("{n} path(s)"),
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "SOURCE",
                        "TYPE",
                        "SCHEMA",
                        "LAST HOUR",
                        "TOTAL",
                        "LAST SEEN",
                        "DRIFT"
                    ],
                    rows,
                    &[3, 4],
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        TypesCommand::Show {
            config,
            source,
            kind,
            json,
        } => {
            let detail = super::operate::target(&config.config)?.show_type(source, kind)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
                return Ok(ExitCode::SUCCESS);
            }
            let t = &detail.summary;
            println!("{} ({}), {}", t.kind, t.source, t.known_as);
            if !t.description.is_empty() {
                println!("{}", t.description);
            }
            println!(
                "arrived: {} in the last hour, {} in all; last {}",
                t.last_hour,
                t.total,
                t.last_seen_ms.map_or("never".into(), rfc3339_ms)
            );
            if detail.drift_rows.is_empty() {
                println!("\nno drift");
            } else {
                let rows = detail
                    .drift_rows
                    .iter()
                    .map(|d| {
                        vec![
                            if d.path.is_empty() {
                                "(the type)".into()
                            } else {
                                d.path.clone()
                            },
                            d.drift.clone(),
                            d.detail.clone(),
                            d.count.to_string(),
                            d.first_event.clone(),
                            d.last_event.clone(),
                        ]
                    })
                    .collect();
                println!(
                    "\n{}",
                    table(
                        &["PATH", "DRIFT", "DETAIL", "EVENTS", "FIRST", "LAST"],
                        rows,
                        &[3]
                    )
                );
            }
            match &detail.schema {
                Some(schema) => println!("\nschema:\n{}", serde_json::to_string_pretty(schema)?),
                None => println!("\nno schema: its provider does not describe it"),
            }
            if let Some(sample) = &detail.sample {
                println!(
                    "\nsample (its last event's data):\n{}",
                    serde_json::to_string_pretty(sample)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
