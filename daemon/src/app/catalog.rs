//! The catalog put together: each source's event types from its provider
//! plugin's catalog and its settings (`strict`, `learn_schemas`), made at
//! start and again at each reload (what was learned carried over), the
//! schemas learned before taken from the store, and its recorder started.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, Counter, Policy, Recorder, SourceCatalog};
use crate::config::Problem;
use crate::event::Announce;
use crate::host::Topology;
use crate::store::Pipeline;

use super::Config;

/// The catalog of the configured sources; a schema that does not compile
/// is a problem at the source's place in the config.
pub fn catalog_of(
    config: &Config,
    topology: &Topology,
    before: Option<&Catalog>,
) -> Result<Catalog, Vec<Problem>> {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for (name, instance) in &topology.sources {
        let Some(sc) = config.sources.get(name) else {
            continue;
        };
        let policy = Policy {
            strict: sc.strict,
            learn: sc.learn_schemas,
        };
        match SourceCatalog::new(name, &instance.plugin().name, instance.catalog(), policy) {
            Ok(s) => sources.push(s),
            Err(e) => problems.push(Problem::new(&sc.location, format!("sources.{name}: {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(Catalog::new(sources, before))
    } else {
        Err(problems)
    }
}

/// The live catalog and what counts against it.
pub struct Live {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub counter: Arc<Counter>,
}

/// Makes `catalog` live: takes the schemas the store learned before, and
/// starts its recorder.
pub async fn start(
    catalog: Catalog,
    store: Arc<dyn Pipeline>,
    config: &Config,
    announce: Announce,
    stop: watch::Receiver<bool>,
) -> (Live, JoinHandle<()>) {
    match store.event_types(None).await {
        Ok(rows) => catalog.adopt(&rows),
        Err(e) => tracing::warn!("cannot read the schemas learned before: {e}"),
    }
    let counter = Arc::new(Counter::default());
    let recorder = Recorder {
        store,
        counter: counter.clone(),
        announce,
        retention: Some(config.store.retention),
    }
    .spawn(stop);
    (
        Live {
            catalog: Arc::new(ArcSwap::from_pointee(catalog)),
            counter,
        },
        recorder,
    )
}
