//! `switchyard check`: the config, plugins and rules, every problem with
//! its file and line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

pub fn check(path: &Path) -> Result<ExitCode> {
    match switchyard::check(path) {
        Ok(report) => {
            for line in &report.summary {
                println!("{line}");
            }
            // Which sockets `run` would listen on: systemd's, or its own.
            if let Ok((config, _)) = switchyard::app::config::load(path) {
                let admin = config.admin.as_ref().map(|a| a.listen);
                for line in switchyard::listener::activation::describe(config.listen, admin) {
                    println!("listener {line}");
                }
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!("{}: OK", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems.0 {
                println!("error: {p}");
            }
            println!(
                "{}: {} problem{}",
                path.display(),
                problems.0.len(),
                if problems.0.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
