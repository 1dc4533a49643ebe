//! Which events to list: [`EventFilter`], the one shape the admin API's
//! query string, the dashboard's URLs and the CLI's flags all read into
//! ([`EventFilter::from_query`], [`EventFilter::to_query`]), and the SQL
//! condition both backends run for it ([`EventFilter::sql`]).
//!
//! Paging is by id (ULIDs sort by arrival): `before` gives the page after
//! the last one shown, newest first; `after` gives what came since, oldest
//! first (the live tail). A time range is an id range too, so no filter
//! needs an index of its own beyond the primary key.

use std::collections::HashMap;

use super::ulid_floor;

/// Filters for listing events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub source: Option<String>,
    /// A type, or a glob of types: `*` any characters, `?` one
    /// (`tight.*`, `*.invoiceViewed`).
    pub kind: Option<String>,
    /// `pending`, `routed`, `stale`, or `dead` (a job of it gave up).
    pub state: Option<String>,
    /// A field of the event (`data.invoice.id`) and the value it must have.
    pub field: Option<FieldMatch>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only events older than this id (the next page), newest first.
    pub before: Option<String>,
    /// Only events newer than this id, oldest first (unless `before` is
    /// given too).
    pub after: Option<String>,
    /// Only events at or after this id, without changing the order: the
    /// end of a bounded search (see [`EventFilter::is_selective`]).
    pub floor: Option<String>,
    pub limit: usize,
    /// Whether each event comes with its envelope (the events stream).
    pub envelopes: bool,
}

/// The states an event filter takes.
pub const STATES: [&str; 6] = ["pending", "routed", "stale", "dead", "handshake", "held"];

/// `path = value`: a field of the event's envelope, by its keys (and array
/// indexes) from the top (`data.invoice.id`, `data.lines.0.sku`), compared
/// as text with the value (`42`, `true`, `inv_1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMatch {
    pub path: Vec<String>,
    pub value: String,
}

impl FieldMatch {
    /// Reads `data.invoice.id=inv_1` (spaces around `=` are dropped).
    pub fn parse(text: &str) -> Result<FieldMatch, String> {
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| format!("field: {text:?} is not path=value (data.invoice.id=inv_1)"))?;
        let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
        let key_ok = |k: &String| {
            !k.is_empty()
                && k.len() <= 64
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-@$:".contains(c))
        };
        if path.len() > 16 || !path.iter().all(key_ok) {
            return Err(format!(
                "field: {:?} is not a path of keys (letters, digits, _ - @ $ :) joined by dots",
                text.split_once('=')
                    .map(|(p, _)| p.trim())
                    .unwrap_or_default()
            ));
        }
        Ok(FieldMatch {
            path,
            value: value.trim().to_string(),
        })
    }
}

impl std::fmt::Display for FieldMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.path.join("."), self.value)
    }
}

/// A query string's or form's parameter `k`, trimmed; an empty one counts
/// as absent.
pub fn given(q: &HashMap<String, String>, k: &str) -> Option<String> {
    q.get(k)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Unix milliseconds or an RFC 3339 time, as milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    })
}

/// How a backend's SQL spells what differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// An event row's envelope (the row as `e`): the embedded store keeps
    /// it in the journal (`sqlite/envelopes.rs`).
    pub(crate) fn envelope(self) -> &'static str {
        match self {
            Dialect::Sqlite => super::sqlite::ENVELOPE,
            Dialect::Postgres => "e.envelope",
        }
    }
}

impl EventFilter {
    /// Reads a query string's parameters (`source`, `type`, `state`,
    /// `field`, `since`, `until`, `before`, `after`, `limit`); empty ones
    /// count as absent. `limit` is capped at `max_limit`.
    pub fn from_query(
        q: &HashMap<String, String>,
        default_limit: usize,
        max_limit: usize,
    ) -> Result<EventFilter, String> {
        let given = |k: &str| given(q, k);
        let time = |k: &str| {
            given(k)
                .map(|t| {
                    parse_time(&t).ok_or_else(|| {
                        format!(
                            "{k}: {t:?} is neither Unix milliseconds nor an RFC 3339 time (2025-04-01T11:31:04Z)"
                        )
                    })
                })
                .transpose()
        };
        let id = |k: &str| {
            given(k)
                .map(|id| match ulid::Ulid::from_string(&id) {
                    Ok(_) => Ok(id),
                    Err(_) => Err(format!("{k}: {id:?} is not an event id")),
                })
                .transpose()
        };
        let state = given("state");
        if let Some(s) = &state {
            if !STATES.contains(&s.as_str()) {
                return Err(format!("state: {s:?} is not one of {}", STATES.join(", ")));
            }
        }
        let limit = match given("limit") {
            None => default_limit,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| format!("limit: {l:?} is not a count"))?,
        };
        Ok(EventFilter {
            source: given("source"),
            kind: given("type"),
            state,
            field: given("field").map(|f| FieldMatch::parse(&f)).transpose()?,
            since_ms: time("since")?,
            until_ms: time("until")?,
            before: id("before")?,
            after: id("after")?,
            floor: None,
            limit: limit.clamp(1, max_limit),
            envelopes: false,
        })
    }

    /// The query string's parameters that give this filter back (without
    /// `limit` and the paging ids, which a caller adds as it pages).
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        [
            ("source", self.source.clone()),
            ("type", self.kind.clone()),
            ("state", self.state.clone()),
            ("field", self.field.as_ref().map(FieldMatch::to_string)),
            ("since", self.since_ms.map(|t| t.to_string())),
            ("until", self.until_ms.map(|t| t.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// Whether the filter may have to read far to fill a page: anything
    /// but the id and time bounds, which the primary key serves.
    pub fn is_selective(&self) -> bool {
        self.source.is_some() || self.kind.is_some() || self.state.is_some() || self.field.is_some()
    }

    /// The same bounds on ids and times, and nothing else.
    pub fn bounds(&self) -> EventFilter {
        EventFilter {
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            before: self.before.clone(),
            after: self.after.clone(),
            floor: self.floor.clone(),
            limit: self.limit,
            ..Default::default()
        }
    }

    /// Newest first, unless only `after` is given (the tail reads forward).
    pub fn oldest_first(&self) -> bool {
        self.after.is_some() && self.before.is_none()
    }

    /// The `WHERE` condition over `events e` (always something: `true`
    /// alone) and the text values it binds, numbered from `?1`/`$1`.
    pub fn sql(&self, dialect: Dialect) -> (String, Vec<String>) {
        let mut args = Vec::new();
        let mut sql = String::from("1 = 1");
        // Appends `text` with its `{}` as the next placeholder, bound to `arg`.
        let bind = |sql: &mut String, args: &mut Vec<String>, text: &str, arg: String| {
            args.push(arg);
            let n = args.len();
            let p = match dialect {
                Dialect::Sqlite => format!("?{n}"),
                Dialect::Postgres => format!("${n}"),
            };
            sql.push_str(&text.replace("{}", &p));
        };
        if let Some(source) = &self.source {
            bind(&mut sql, &mut args, " AND e.source = {}", source.clone());
        }
        if let Some(kind) = &self.kind {
            if !kind.contains(['*', '?']) {
                bind(&mut sql, &mut args, " AND e.type = {}", kind.clone());
            } else {
                // `*` any run of characters, `?` one; everything else, and
                // the case of letters, as written (as rules' EVENTS match).
                match dialect {
                    Dialect::Sqlite => {
                        let glob = kind.replace('[', "[[]");
                        bind(&mut sql, &mut args, " AND e.type GLOB {}", glob);
                    }
                    Dialect::Postgres => {
                        let like = kind
                            .replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_")
                            .replace('*', "%")
                            .replace('?', "_");
                        bind(&mut sql, &mut args, " AND e.type LIKE {} ESCAPE '\\'", like);
                    }
                }
            }
        }
        match self.state.as_deref() {
            None => {}
            Some("dead") => sql.push_str(
                " AND EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id AND j.state = 'dead')",
            ),
            Some(state) => bind(&mut sql, &mut args, " AND e.state = {}", state.to_string()),
        }
        if let Some(field) = &self.field {
            match dialect {
                Dialect::Sqlite => {
                    let path = field.path.iter().fold(String::from("$"), |p, k| {
                        if k.bytes().all(|b| b.is_ascii_digit()) {
                            format!("{p}[{k}]")
                        } else {
                            format!("{p}.\"{k}\"")
                        }
                    });
                    bind(&mut sql, &mut args, "", path);
                    let p = args.len();
                    let envelope = dialect.envelope();
                    // json_extract gives SQL values: true is 1, so booleans
                    // are spelled as JSON spells them, the rest as text.
                    bind(
                        &mut sql,
                        &mut args,
                        &format!(
                            " AND (CASE json_type({envelope}, ?{p}) WHEN 'true' THEN 'true' \
                             WHEN 'false' THEN 'false' \
                             ELSE CAST(json_extract({envelope}, ?{p}) AS TEXT) END) = {{}}"
                        ),
                        field.value.clone(),
                    );
                }
                Dialect::Postgres => {
                    let path = format!("{{{}}}", field.path.join(","));
                    bind(
                        &mut sql,
                        &mut args,
                        &format!(" AND {} #>> ({{}}::text)::text[]", dialect.envelope()),
                        path,
                    );
                    bind(&mut sql, &mut args, " = {}", field.value.clone());
                }
            }
        }
        if let Some(since) = self.since_ms {
            bind(&mut sql, &mut args, " AND e.id >= {}", ulid_floor(since));
        }
        if let Some(until) = self.until_ms {
            bind(&mut sql, &mut args, " AND e.id < {}", ulid_floor(until));
        }
        if let Some(before) = &self.before {
            bind(&mut sql, &mut args, " AND e.id < {}", before.clone());
        }
        if let Some(after) = &self.after {
            bind(&mut sql, &mut args, " AND e.id > {}", after.clone());
        }
        if let Some(floor) = &self.floor {
            bind(&mut sql, &mut args, " AND e.id >= {}", floor.clone());
        }
        (sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_query_string_reads_into_a_filter_and_back() {
        let q = query(&[
            ("source", "tight"),
            ("type", "tight.*"),
            ("state", "dead"),
            ("field", " data.invoice.id = inv_1 "),
            ("since", "2025-04-01T11:31:04Z"),
            ("until", ""),
            ("limit", "5000"),
        ]);
        let f = EventFilter::from_query(&q, 50, 1000).unwrap();
        assert_eq!(f.limit, 1000);
        assert_eq!(f.until_ms, None);
        assert_eq!(
            f.field,
            Some(FieldMatch {
                path: vec!["data".into(), "invoice".into(), "id".into()],
                value: "inv_1".into()
            })
        );
        let back: HashMap<String, String> = f
            .to_query()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(EventFilter::from_query(&back, 1000, 1000).unwrap(), f);
    }

    #[test]
    fn bad_parameters_say_what_is_wrong() {
        for (k, v, says) in [
            ("state", "gone", "state: \"gone\" is not one of"),
            ("field", "data.id", "is not path=value"),
            ("field", "data..id=1", "is not a path of keys"),
            ("field", "data.\"x\"=1", "is not a path of keys"),
            ("since", "yesterday", "neither Unix milliseconds"),
            ("before", "x'; drop", "is not an event id"),
            ("limit", "-1", "is not a count"),
        ] {
            let err = EventFilter::from_query(&query(&[(k, v)]), 50, 1000).unwrap_err();
            assert!(err.contains(says), "{k}={v}: {err}");
        }
    }

    #[test]
    fn the_sql_binds_every_value_and_numbers_them() {
        let f = EventFilter {
            kind: Some("a_b*".into()),
            field: Some(FieldMatch::parse("data.lines.0.sku=x").unwrap()),
            after: Some("01J0000000000000000000000A".into()),
            ..Default::default()
        };
        let (sql, args) = f.sql(Dialect::Sqlite);
        assert!(sql.contains("GLOB ?1"), "{sql}");
        assert_eq!(args[0], "a_b*");
        assert_eq!(args[1], "$.\"data\".\"lines\"[0].\"sku\"");
        assert!(sql.contains("= ?3") && sql.contains("e.id > ?4"), "{sql}");
        let (sql, args) = f.sql(Dialect::Postgres);
        assert!(sql.contains("LIKE $1 ESCAPE"), "{sql}");
        assert_eq!(args[0], "a\\_b%");
        assert!(sql.contains("#>> ($2::text)::text[] = $3"), "{sql}");
        assert_eq!(args[1], "{data,lines,0,sku}");
        assert!(f.oldest_first());
    }
}
