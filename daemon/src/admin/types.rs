//! The catalog's operations: each source's event types as declared and as
//! they arrive (`switchyard types list|show`, `GET /v1/types`, the
//! dashboard's types page), and releasing events a strict source held.
//!
//! A type is what its provider declared (with its schema), what was
//! learned, or what arrived undeclared; its counts, last event and drift
//! come from the store, its schema from the live catalog (or, with no
//! daemon running, one made from the config's plugins).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ops::{OpError, OpResult};
use crate::catalog::Catalog;
use crate::store::{now_ms, DriftRow, Store, TypeRow};

/// One type of one source, as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeSummary {
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `declared` (the provider's catalog), `learned`, or `undeclared`.
    pub known_as: String,
    #[serde(default)]
    pub description: String,
    pub total: u64,
    pub last_hour: u64,
    pub last_seen_ms: Option<i64>,
    /// The last event of it (a sample), if any arrived.
    pub last_event: Option<String>,
    /// Drift recorded for it: how many paths.
    pub drift: u64,
}

/// One type whole: its summary, schema, a sample and its drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeDetail {
    #[serde(flatten)]
    pub summary: TypeSummary,
    pub schema: Option<Value>,
    /// The last event's data, while the store keeps it.
    pub sample: Option<Value>,
    pub drift_rows: Vec<DriftRow>,
}

/// Held events released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub released: u64,
}

/// Which held events to release: one (`id`), a source's (`source`), or
/// every one (`all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub all: bool,
}

fn summary(
    source: &str,
    kind: &str,
    row: Option<&TypeRow>,
    catalog: &Catalog,
    drift: u64,
    now: i64,
) -> TypeSummary {
    let entry = catalog.sources.get(source).and_then(|s| s.entry(kind));
    let known_as = match &entry {
        Some(t) if t.learned => "learned",
        Some(_) => "declared",
        None => "undeclared",
    };
    TypeSummary {
        source: source.to_string(),
        kind: kind.to_string(),
        known_as: known_as.into(),
        description: entry.map(|t| t.description.clone()).unwrap_or_default(),
        total: row.map_or(0, |r| r.total),
        last_hour: row.map_or(0, |r| r.in_last_hour(now)),
        last_seen_ms: row.filter(|r| r.total > 0).map(|r| r.last_seen_ms),
        last_event: row.map(|r| r.last_event.clone()).filter(|e| !e.is_empty()),
        drift,
    }
}

/// Every type of a source (or of all): declared ones that never arrived
/// too, by source and name.
pub async fn types(
    store: &dyn Store,
    catalog: &Catalog,
    source: Option<String>,
) -> OpResult<Vec<TypeSummary>> {
    if let Some(s) = &source {
        if !catalog.sources.contains_key(s) {
            return Err(OpError::NotFound(format!("no source {s}")));
        }
    }
    let rows = store.event_types(source.clone()).await?;
    let drift = store.schema_drift(source.clone(), None).await?;
    let now = now_ms();
    // By (source, type), each looked up once per type listed.
    let rows: HashMap<(&str, &str), &TypeRow> = rows
        .iter()
        .map(|r| ((r.source.as_str(), r.kind.as_str()), r))
        .collect();
    let mut paths: HashMap<(&str, &str), u64> = HashMap::new();
    for d in &drift {
        *paths
            .entry((d.source.as_str(), d.kind.as_str()))
            .or_default() += 1;
    }
    let mut names: Vec<(String, String)> = rows
        .keys()
        .map(|(s, k)| (s.to_string(), k.to_string()))
        .collect();
    for (name, s) in &catalog.sources {
        if source.as_ref().is_some_and(|want| want != name) {
            continue;
        }
        names.extend(s.entries().iter().map(|t| (name.clone(), t.name.clone())));
    }
    names.sort();
    names.dedup();
    Ok(names
        .iter()
        .map(|(s, k)| {
            let key = (s.as_str(), k.as_str());
            let row = rows.get(&key).copied();
            let drift = paths.get(&key).copied().unwrap_or(0);
            summary(s, k, row, catalog, drift, now)
        })
        .collect())
}

/// One type whole.
pub async fn show_type(
    store: &dyn Store,
    catalog: &Catalog,
    source: String,
    kind: String,
) -> OpResult<TypeDetail> {
    let rows = store.event_types(Some(source.clone())).await?;
    let row = rows.iter().find(|r| r.kind == kind);
    let entry = catalog.sources.get(&source).and_then(|s| s.entry(&kind));
    if row.is_none() && entry.is_none() {
        return Err(OpError::NotFound(format!(
            "no type {kind} of source {source}"
        )));
    }
    let drift_rows = store
        .schema_drift(Some(source.clone()), Some(kind.clone()))
        .await?;
    let summary = summary(
        &source,
        &kind,
        row,
        catalog,
        drift_rows.len() as u64,
        now_ms(),
    );
    let sample = match &summary.last_event {
        Some(id) => match store.show_event(id.clone()).await {
            Ok(detail) => detail.envelope.get("data").cloned(),
            Err(crate::store::StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    Ok(TypeDetail {
        summary,
        schema: entry.map(|t| (*t.schema).clone()),
        sample,
        drift_rows,
    })
}

/// Releases held events (up to 10,000 at once), to be routed as they are.
pub async fn release(store: &dyn Store, which: Release) -> OpResult<Released> {
    let Release { id, source, all } = which;
    if id.is_none() && source.is_none() && !all {
        return Err(OpError::Invalid(
            "say which held events: an id, a source, or all".into(),
        ));
    }
    let released = store.release_held(id.clone(), source, 10_000).await?;
    if released == 0 {
        if let Some(id) = id {
            return Err(OpError::NotFound(format!("no held event {id}")));
        }
    }
    Ok(Released { released })
}
