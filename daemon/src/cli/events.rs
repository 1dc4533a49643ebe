//! `switchyard events list|show` and `switchyard replay`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use switchyard::store::EventFilter;

use super::args::*;
use super::*;

pub fn replay(config: &Path, id: String) -> Result<ExitCode> {
    let done = super::operate::target(config)?.replay(id)?;
    println!(
        "event {} will be routed again through the current rules",
        done.replayed
    );
    Ok(ExitCode::SUCCESS)
}

pub fn events(command: EventsCommand) -> Result<ExitCode> {
    match command {
        EventsCommand::List {
            config,
            source,
            kind,
            since,
            until,
            state,
            field,
            before,
            limit,
            json,
        } => {
            // Read as the admin API reads its query, so both check alike.
            let mut query = std::collections::HashMap::new();
            for (k, v) in [
                ("source", source),
                ("type", kind),
                ("state", state),
                ("field", field),
                ("before", before),
                ("limit", Some(limit.to_string())),
            ] {
                if let Some(v) = v {
                    query.insert(k.to_string(), v);
                }
            }
            let mut filter = EventFilter::from_query(&query, 50, usize::MAX)
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            filter.since_ms = since.as_deref().map(parse_when).transpose()?;
            filter.until_ms = until.as_deref().map(parse_when).transpose()?;
            {
                let list = super::operate::target(&config.config)?.list_events(filter)?;
                if json {
                    json_lines(&list)?;
                } else {
                    let rows = list
                        .iter()
                        .map(|e| {
                            vec![
                                e.id.clone(),
                                rfc3339_ms(e.received_at_ms),
                                e.source.clone(),
                                e.kind.clone(),
                                e.state.clone(),
                                e.jobs.to_string(),
                                e.jobs_dead.to_string(),
                                e.duplicates.to_string(),
                            ]
                        })
                        .collect();
                    let header = [
                        "ID", "RECEIVED", "SOURCE", "TYPE", "STATE", "JOBS", "DEAD", "DUPS",
                    ];
                    println!("{}", table(&header, rows, &[5, 6, 7]));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
        EventsCommand::Show { config, id } => {
            let detail = super::operate::target(&config.config)?.show_event(id)?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Release {
            config,
            id,
            source,
            all,
        } => {
            let which = switchyard::admin::types::Release { id, source, all };
            let done = super::operate::target(&config.config)?.release(which)?;
            println!("{} held event(s) will be routed as they are", done.released);
            Ok(ExitCode::SUCCESS)
        }
    }
}
