//! `switchyard send`: a provider's signed sample, posted to the daemon or
//! printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use switchyard::app::config;
use switchyard::host::{self, Instance, Registry, Role};

/// The provider instance of a configured source, made as the daemon makes it.
pub fn source_instance(config: &config::Config, path: &Path, source: &str) -> Result<Instance> {
    let Some(sc) = config.sources.get(source) else {
        bail!(
            "no source {source:?} in {} (sources: {})",
            path.display(),
            config
                .sources
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let registry = Registry::load_dir(&config.plugin_dir).map_err(|p| anyhow!("{p}"))?;
    host::instantiate(&registry, &sc.plugin, Role::Provider, source, &sc.settings)
        .map_err(|e| anyhow!("sources.{source}: {e}"))
}

pub fn send(
    path: &Path,
    source: &str,
    event: &str,
    to: Option<&str>,
    print: bool,
) -> Result<ExitCode> {
    let (config, _) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    let instance = source_instance(&config, path, source)?;
    let sample = instance.sample(event)?;
    let base = match to {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}/hooks/{source}")
        }
    };
    let url = if sample.query.is_empty() {
        base
    } else {
        format!("{base}?{}", sample.query)
    };
    if print {
        println!("{} {url}", sample.method);
        for (n, v) in &sample.headers {
            println!("{n}: {v}");
        }
        println!();
        println!("{}", sample.body);
        return Ok(ExitCode::SUCCESS);
    }
    let method = reqwest::Method::from_bytes(sample.method.as_bytes()).context("sample method")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut request = client.request(method, &url).body(sample.body);
    for (n, v) in &sample.headers {
        request = request.header(n, v);
    }
    let response = request
        .send()
        .with_context(|| format!("cannot post to {url}"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    println!("{status} {text}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The events a provider's sample becomes: signed by the plugin, verified
/// and normalized by it, completed by the host.
pub fn sample_events(
    config: &config::Config,
    path: &Path,
    source: &str,
    event: &str,
) -> Result<Vec<switchyard::event::Event>> {
    let instance = source_instance(config, path, source)?;
    switchyard::ingress::sample_events(&instance, source, event).map_err(|e| anyhow!(e))
}
