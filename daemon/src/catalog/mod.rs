//! The event-type catalog: what each source's provider says it sends, and
//! what arrives against it.
//!
//! Owns: each source's event types with their JSON Schemas, compiled once
//! (a provider plugin's catalog, ABI 1.8, prefixed with its name as its
//! events are; and schemas learned from arrivals for a source with
//! `learn_schemas = true`, `learn.rs`); checking an event against its
//! type's schema and naming the drift (`drift.rs`); counting what arrives
//! and recording it with the drift in the store about once a second,
//! announcing drift first seen as `switchyard.schema.drift` (`tally.rs`);
//! whether a rule's read of `event.data` can exist for a type
//! (`paths.rs`).
//! Calls: `store` (the tally, learned schemas) and `event`'s announce;
//! the router checks each event with it before the rules run, off the
//! acknowledgement's path; `switchyard check`, `rules test` and the
//! playground check rules' reads with it.

pub mod drift;
pub mod learn;
pub mod paths;
mod tally;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use switchyard_plugin_api::EventType;

use crate::event::Event;
use crate::store::Learned;
pub use drift::{Drift, DriftKind};
pub use tally::{Counter, Recorder};

/// One event type, its schema compiled.
pub struct TypeEntry {
    /// Its full name, as events carry it (`tight.invoiceViewed`).
    pub name: String,
    pub description: String,
    pub schema: Arc<Value>,
    /// Learned from arrivals, not declared by the provider.
    pub learned: bool,
    validator: jsonschema::Validator,
}

impl TypeEntry {
    /// Compiles a schema; says why it does not.
    pub fn new(
        name: String,
        description: String,
        schema: Value,
        learned: bool,
    ) -> Result<TypeEntry, String> {
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .map_err(|e| format!("the schema of {name} does not compile: {e}"))?;
        Ok(TypeEntry {
            name,
            description,
            schema: Arc::new(schema),
            learned,
            validator,
        })
    }

    /// The drift of an event's data from this type's schema.
    pub fn check(&self, data: &Value) -> Vec<Drift> {
        drift::check(&self.validator, data)
    }
}

/// What a source's settings say of its catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// A drifted event waits (state `held`) for an operator.
    pub strict: bool,
    /// Types the provider does not describe get a schema learned from
    /// their first events.
    pub learn: bool,
}

/// One source's types.
pub struct SourceCatalog {
    pub source: String,
    pub provider: String,
    pub policy: Policy,
    /// What the provider declared, by full type name.
    pub declared: HashMap<String, Arc<TypeEntry>>,
    /// What was learned (or is being learned), by full type name.
    learned: Mutex<HashMap<String, Learning>>,
}

/// A learned type, or the events a schema is being learned from.
enum Learning {
    Gathering(learn::Shape, u64),
    Known(Arc<TypeEntry>),
}

/// What the catalog says of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not checked: its source has no catalog, or its type is being
    /// learned.
    Unchecked,
    Matches,
    Drifted(Vec<Drift>),
}

impl Verdict {
    pub fn drifted(&self) -> bool {
        matches!(self, Verdict::Drifted(_))
    }
}

/// At most this many events' worth of learning is gathered at once per
/// source (types not yet learned): a provider sending a new type with
/// each event does not grow it without end.
const MAX_GATHERING: usize = 256;

impl SourceCatalog {
    /// A source's catalog from what its provider declared (names without
    /// the plugin's prefix): the first schema that does not compile is
    /// refused, naming the type.
    pub fn new(
        source: &str,
        provider: &str,
        declared: &[EventType],
        policy: Policy,
    ) -> Result<SourceCatalog, String> {
        let mut types = HashMap::with_capacity(declared.len());
        for t in declared {
            let name = format!("{provider}.{}", t.name);
            let entry =
                TypeEntry::new(name.clone(), t.description.clone(), t.schema.clone(), false)?;
            types.insert(name, Arc::new(entry));
        }
        Ok(SourceCatalog {
            source: source.to_string(),
            provider: provider.to_string(),
            policy,
            declared: types,
            learned: Mutex::new(HashMap::new()),
        })
    }

    /// Takes schemas learned before (the store's, or the catalog's before a
    /// reload) for types the provider does not declare.
    pub fn adopt_learned(&self, kind: &str, schema: Value) {
        if self.declared.contains_key(kind) || !self.policy.learn {
            return;
        }
        match TypeEntry::new(kind.to_string(), String::new(), schema, true) {
            Ok(entry) => {
                self.learned_map()
                    .insert(kind.to_string(), Learning::Known(Arc::new(entry)));
            }
            Err(e) => {
                tracing::warn!(source = %self.source, kind, "a learned schema is dropped: {e}")
            }
        }
    }

    fn learned_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Learning>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The type entry of a full type name, declared or learned.
    pub fn entry(&self, kind: &str) -> Option<Arc<TypeEntry>> {
        if let Some(t) = self.declared.get(kind) {
            return Some(t.clone());
        }
        match self.learned_map().get(kind) {
            Some(Learning::Known(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// Every type, declared and learned, by name.
    pub fn entries(&self) -> Vec<Arc<TypeEntry>> {
        let mut out: Vec<_> = self.declared.values().cloned().collect();
        out.extend(self.learned_map().values().filter_map(|l| match l {
            Learning::Known(t) => Some(t.clone()),
            Learning::Gathering(..) => None,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Checks an event of this source. A type learned here is handed to
    /// `learned` (to be stored).
    pub fn check(&self, event: &Event, learned: &mut Vec<Learned>) -> Verdict {
        if let Some(t) = self.declared.get(&event.kind) {
            return verdict(t.check(&event.data));
        }
        if self.policy.learn {
            return self.learn(event, learned);
        }
        if self.declared.is_empty() {
            return Verdict::Unchecked;
        }
        Verdict::Drifted(vec![Drift {
            path: String::new(),
            kind: DriftKind::UnknownType,
            detail: format!("not in {}'s catalog", self.provider),
        }])
    }

    fn learn(&self, event: &Event, learned: &mut Vec<Learned>) -> Verdict {
        let mut map = self.learned_map();
        // Only a type not met before looks at how many are being learned:
        // the events of a known type cost a lookup.
        if !map.contains_key(&event.kind) {
            let gathering = map
                .values()
                .filter(|l| matches!(l, Learning::Gathering(..)))
                .count();
            if gathering >= MAX_GATHERING {
                return Verdict::Unchecked;
            }
            map.insert(
                event.kind.clone(),
                Learning::Gathering(learn::Shape::default(), 0),
            );
        }
        let Some(entry) = map.get_mut(&event.kind) else {
            return Verdict::Unchecked;
        };
        if let Learning::Known(t) = entry {
            return verdict(t.check(&event.data));
        }
        if let Learning::Gathering(shape, seen) = entry {
            shape.add(&event.data);
            *seen += 1;
            if *seen >= learn::LEARN_FROM {
                match TypeEntry::new(event.kind.clone(), String::new(), shape.learned(), true) {
                    Ok(t) => {
                        let t = Arc::new(t);
                        tracing::info!(source = %self.source, kind = %event.kind, events = *seen, "learned a schema");
                        learned.push(Learned {
                            source: self.source.clone(),
                            kind: t.name.clone(),
                            schema: (*t.schema).clone(),
                            from: *seen,
                        });
                        *entry = Learning::Known(t);
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.source, kind = %event.kind, "cannot learn a schema: {e}");
                        *entry = Learning::Gathering(learn::Shape::default(), 0);
                    }
                }
            }
        }
        Verdict::Unchecked
    }

    /// The schemas learned so far, to carry over a reload.
    fn learned_schemas(&self) -> Vec<(String, Value)> {
        self.learned_map()
            .iter()
            .filter_map(|(k, l)| match l {
                Learning::Known(t) => Some((k.clone(), (*t.schema).clone())),
                Learning::Gathering(..) => None,
            })
            .collect()
    }
}

fn verdict(drift: Vec<Drift>) -> Verdict {
    if drift.is_empty() {
        Verdict::Matches
    } else {
        Verdict::Drifted(drift)
    }
}

/// Every source's catalog: swapped whole on a reload.
#[derive(Default)]
pub struct Catalog {
    pub sources: HashMap<String, SourceCatalog>,
}

impl Catalog {
    /// A catalog of these sources, carrying over what `before` learned.
    pub fn new(sources: Vec<SourceCatalog>, before: Option<&Catalog>) -> Catalog {
        let catalog = Catalog {
            sources: sources.into_iter().map(|s| (s.source.clone(), s)).collect(),
        };
        if let Some(before) = before {
            for (name, old) in &before.sources {
                if let Some(new) = catalog.sources.get(name) {
                    for (kind, schema) in old.learned_schemas() {
                        new.adopt_learned(&kind, schema);
                    }
                }
            }
        }
        catalog
    }

    /// Takes the schemas the store learned for these sources before.
    pub fn adopt(&self, rows: &[crate::store::TypeRow]) {
        for row in rows {
            if let (Some(s), Some(schema)) = (self.sources.get(&row.source), &row.learned) {
                s.adopt_learned(&row.kind, schema.clone());
            }
        }
    }

    /// Checks an event; types learned on the way go to `learned`.
    pub fn check(&self, event: &Event, learned: &mut Vec<Learned>) -> Verdict {
        match self.sources.get(&event.source) {
            Some(s) => s.check(event, learned),
            None => Verdict::Unchecked,
        }
    }

    /// Whether a source's drifted events are held.
    pub fn strict(&self, source: &str) -> bool {
        self.sources.get(source).is_some_and(|s| s.policy.strict)
    }

    /// Every type whose name `matches` (a rule's `EVENTS`), of every
    /// source: two sources of one provider give it twice, and two of the
    /// generic plugin may give one name two schemas.
    pub fn matching(&self, matches: impl Fn(&str) -> bool) -> Vec<Arc<TypeEntry>> {
        let mut out: Vec<Arc<TypeEntry>> = Vec::new();
        for s in self.sources.values() {
            out.extend(s.entries().into_iter().filter(|t| matches(&t.name)));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
