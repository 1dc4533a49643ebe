//! `switchyard status` and `switchyard reload`: the running daemon's admin API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use switchyard::app::config;

/// Calls the running daemon's admin API (its local socket, else `[admin]`
/// in the config) and prints the answer.
pub fn admin_call(path: &Path, method: &str, api_path: &str) -> Result<ExitCode> {
    let partial = config::load_partial(path).map_err(|p| anyhow!("{p}"))?;
    let Some(api) = super::operate::api(&partial.config) else {
        bail!(
            "no daemon answers at {} or at {}'s [admin] listener: is it running? \
             (for a reload, `systemctl reload switchyard` or kill -HUP work too)",
            switchyard::listener::socket::path(&partial.config.data_dir).display(),
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
