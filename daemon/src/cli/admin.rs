//! `switchyard status` and `switchyard reload`: the running daemon's admin API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use switchyard::config;

/// Calls the running daemon's admin API (`[admin]` in the config) and prints
/// the answer.
pub fn admin_call(path: &Path, method: &str, api_path: &str) -> Result<ExitCode> {
    let partial = config::load_partial(path).map_err(|p| anyhow!("{p}"))?;
    let Some(api) = super::operate::api(&partial.config) else {
        bail!(
            "{} has no [admin] section: the command talks to the daemon's admin API \
             (or use `systemctl reload switchyard` / kill -HUP for a reload)",
            path.display()
        );
    };
    let (ok, body) = api.send(method, api_path, &[], None)?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
