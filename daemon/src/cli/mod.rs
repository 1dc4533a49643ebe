//! The `switchyard` command's parts: one file per command, the arguments in
//! `args`, and `operate` for where operations go (the running daemon's
//! admin API, or the store).

pub mod actions;
pub mod admin;
pub mod args;
pub mod check;
pub mod dlq;
pub mod events;
pub mod listen;
pub mod listen_rules;
pub mod operate;
pub mod rules_test;
pub mod run;
pub mod send;
pub mod subscriptions;
pub mod types;

use anyhow::{Context, Result};
use switchyard::store::now_ms;

use args::LogFormat;

/// One JSON object per line, for programs (`--json`).
pub fn json_lines<T: serde::Serialize>(items: &[T]) -> Result<()> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

/// A table for people: a header row, columns two spaces apart, sized to
/// their content; the columns in `right` (numbers) aligned right.
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Logs go to stderr (journald under systemd). `SWITCHYARD_LOG` (or
/// `RUST_LOG`) sets the filter; the daemon logs at info, other commands at warn.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A time given as RFC 3339, or as an age (`90m`, `2d`) before now.
pub fn parse_when(text: &str) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let age = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time nor an age like 1h"))?;
    Ok(now_ms() - age.as_millis() as i64)
}

/// Unix milliseconds as RFC 3339 UTC with exactly three decimals, so that
/// times line up in a table.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
