//! Ingress built from its sections and what it works with: the sources
//! around the plugin instances the host made for them, its limits (the
//! top-level keys and `[store]`'s bounds, gathered by the assembler), and
//! the links it hands on through (the store, the router's inbox).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::{Ingress, Source, SourceConfig};
use crate::host::{CallPool, Instance, Lane};
use crate::metrics::Metrics;
use crate::store::{BacklogGauge, PendingEvent, Pipeline};

/// What one webhook is held to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline of the verify call.
    pub plugin_timeout: Duration,
    /// Largest body taken (413 above).
    pub max_body_bytes: u64,
    /// How long a delivery's dedup key is remembered.
    pub dedup_window: Duration,
    /// How long an acknowledgement waits for the store's commit (503 after).
    pub write_timeout: Duration,
    /// Backlog bounds beyond which new webhooks get 503.
    pub max_unrouted_events: u64,
    pub max_pending_jobs: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What ingress works with and hands on to.
pub struct Links {
    pub pool: CallPool,
    pub store: Arc<dyn Pipeline>,
    /// The router's inbox, and the flag set when it was full.
    pub router: mpsc::Sender<PendingEvent>,
    pub router_overflowed: Arc<AtomicBool>,
    pub gauge: Arc<BacklogGauge>,
    pub metrics: Arc<Metrics>,
}

impl Ingress {
    pub fn new(limits: Limits, sources: BTreeMap<String, Arc<Source>>, links: Links) -> Ingress {
        Ingress {
            sources: ArcSwap::from_pointee(sources),
            pool: links.pool,
            plugin_timeout: limits.plugin_timeout,
            max_body_bytes: limits.max_body_bytes,
            store: links.store,
            dedup_window: limits.dedup_window,
            write_timeout: limits.write_timeout,
            router: links.router,
            router_overflowed: links.router_overflowed,
            gauge: links.gauge,
            max_unrouted_events: limits.max_unrouted_events,
            max_pending_jobs: limits.max_pending_jobs,
            trusted_proxies: limits.trusted_proxies,
            metrics: links.metrics,
            stopping: AtomicBool::new(false),
            rejections: Default::default(),
            quiet: Default::default(),
        }
    }
}

/// The configured sources, around the plugin instances the host made for
/// them (an instance without its config section is left out).
pub fn sources(
    configs: &BTreeMap<String, SourceConfig>,
    instances: BTreeMap<String, Arc<Instance>>,
    pool: &CallPool,
) -> BTreeMap<String, Arc<Source>> {
    instances
        .into_iter()
        .filter_map(|(name, instance)| {
            let sc = configs.get(&name)?;
            // The config's, and those the plugin says its verification
            // reads (ABI 1.6): replaced whole wherever a request is kept
            // or shown.
            let mut redact_headers = sc.redact_headers.clone();
            for h in instance.credential_headers() {
                if !redact_headers.iter().any(|r| r.eq_ignore_ascii_case(h)) {
                    redact_headers.push(h.clone());
                }
            }
            let source = Source {
                name: name.clone(),
                instance,
                redact_headers,
                allow_ips: sc.allow_ips.clone(),
                limits: super::limit::SourceLimits::new(
                    sc.rate.clone(),
                    sc.rate_per_sender.clone(),
                ),
                credentials: sc.credentials.clone(),
                lane: Lane::new(pool.clone()),
            };
            Some((name, Arc::new(source)))
        })
        .collect()
}
