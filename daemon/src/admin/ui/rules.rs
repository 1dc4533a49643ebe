//! The rules page and the playground.
//!
//! `GET /ui/rules`: every rule of the live set (file, the event types it
//! wants, the actions it calls) and every file that does not compile, at
//! its `file:line:col`.
//!
//! The playground (`/ui/rules/playground`): a rule's text (a live rule's,
//! or new), run on a stored event, a provider's sample, or an event typed
//! in as JSON — in the sandbox every rule runs in, with its limits, and no
//! side effect: it shows the action calls the edited rule set would make
//! beside those the live set makes. Running is open to the read-only
//! token; saving the text to the rules folder (where hot reload makes it
//! live) is the admin's, and only for text that compiles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::{Role, Session};
use super::{may_act, may_look, nav, page, page_route, pretty, see_other, Nav, SessionFilter};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::event::Event;
use crate::rules::{self, RuleRun, RuleSet};

/// The largest rule text the playground takes.
const MAX_TEXT: u64 = 64 * 1024;

struct RuleRow {
    name: String,
    file: String,
    patterns: String,
    actions: String,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    version: u64,
    rules: Vec<RuleRow>,
    broken: Vec<(String, String)>,
}

/// What the playground's form holds.
#[derive(Default)]
struct Form {
    rule: String,
    text: String,
    /// `stored`, `sample` or `json`.
    from: String,
    event_id: String,
    source: String,
    sample: String,
    json: String,
}

impl Form {
    fn of(q: &HashMap<String, String>) -> Form {
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let mut f = Form {
            rule: get("rule").trim().to_string(),
            text: get("text").replace("\r\n", "\n"),
            from: get("from"),
            event_id: get("event").trim().to_string(),
            source: get("source"),
            sample: get("sample").trim().to_string(),
            json: get("json"),
        };
        if f.from.is_empty() {
            f.from = if f.event_id.is_empty() {
                "sample"
            } else {
                "stored"
            }
            .into();
        }
        f
    }
}

/// One rule's run as shown (here and on an event's page).
pub(super) struct RunView {
    pub(super) rule: String,
    pub(super) error: String,
    pub(super) elapsed_us: u64,
    /// Action, its parameters (pretty JSON), whether it is configured.
    pub(super) calls: Vec<(String, String, bool)>,
}

impl RunView {
    /// The rule runs an event's last routing stored (JSON of [`RuleRun`]s).
    pub(super) fn of_stored(runs: &Value, known: &dyn Fn(&str) -> bool) -> Vec<RunView> {
        runs.as_array()
            .map(|runs| {
                runs.iter()
                    .map(|r| RunView {
                        rule: r["rule"].as_str().unwrap_or_default().to_string(),
                        error: r["error"].as_str().unwrap_or_default().to_string(),
                        elapsed_us: r["elapsed_us"].as_u64().unwrap_or(0),
                        calls: r["calls"]
                            .as_array()
                            .map(|calls| {
                                calls
                                    .iter()
                                    .map(|c| {
                                        let action = c["action"].as_str().unwrap_or_default();
                                        (action.to_string(), pretty(&c["params"]), known(action))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Outcome {
    event_type: String,
    event: String,
    wants: bool,
    live: Vec<RunView>,
    edited: Vec<RunView>,
}

#[derive(Template)]
#[template(path = "playground.html")]
struct Playground {
    nav: Option<Nav>,
    csrf: String,
    can_save: bool,
    form: Form,
    sources: Vec<String>,
    rule_names: Vec<String>,
    problem: Option<String>,
    outcome: Option<Outcome>,
    /// The text's reads of event fields its types cannot have.
    checks: Vec<String>,
}

/// What the catalog says of a rule's text: each read of an event field
/// none of its types can have, `line:col: …`; nothing when the text does
/// not compile (running it says why).
fn checks_of(app: &Switchyard, name: &str, text: &str) -> Vec<String> {
    let rules = app.rules();
    let Ok(path) = rule_file(&rules.dir, name) else {
        return Vec::new();
    };
    let Ok(rule) = rules::compile(&rules.engine, &path, text) else {
        return Vec::new();
    };
    let file = format!("{}:", path.display());
    rules::reads::check(&rule, &app.catalog())
        .into_iter()
        .map(|p| {
            let at = p.location.strip_prefix(&file).unwrap_or(&p.location);
            format!("{at}: {}", p.message)
        })
        .collect()
}

/// `POST /ui/rules/check`: the playground's checks of a text, as you type
/// (`static/playground.js`): `{"checks": ["3:36: reads …"]}`.
async fn check_text(
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    if let Err(refused) = may_look(s, &f) {
        return *refused;
    }
    let name = f.get("rule").cloned().unwrap_or_default();
    let text = f.get("text").cloned().unwrap_or_default();
    let checks = tokio::task::spawn_blocking(move || checks_of(&app, &name, &text))
        .await
        .unwrap_or_default();
    warp::reply::Reply::into_response(warp::reply::json(&serde_json::json!({ "checks": checks })))
}

fn views(runs: Vec<RuleRun>, known: &dyn Fn(&str) -> bool) -> Vec<RunView> {
    runs.into_iter()
        .map(|r| RunView {
            rule: r.rule,
            error: r.error.unwrap_or_default(),
            elapsed_us: r.elapsed_us,
            calls: r
                .calls
                .into_iter()
                .map(|c| {
                    let ok = known(&c.action);
                    (c.action, pretty(&c.params), ok)
                })
                .collect(),
        })
        .collect()
}

/// A rule's name as a file name: letters, digits, `-` and `_`.
fn rule_file(dir: &std::path::Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?} is not a rule name: letters, digits, - and _ (the file is NAME.rhai)"
        ));
    }
    Ok(dir.join(format!("{name}.rhai")))
}

/// The event the form names.
async fn event_of(app: &Switchyard, f: &Form) -> Result<Event, String> {
    match f.from.as_str() {
        "stored" => {
            let detail = ops::show_event(app.store().as_ref(), f.event_id.clone())
                .await
                .map_err(|e| match e {
                    ops::OpError::NotFound(_) => format!("no stored event {:?}", f.event_id),
                    e => e.to_string(),
                })?;
            serde_json::from_value(detail.envelope)
                .map_err(|e| format!("the stored event does not read: {e}"))
        }
        "sample" => {
            let sources = app.sources();
            let source = sources
                .get(&f.source)
                .ok_or_else(|| format!("no source {:?} is configured", f.source))?
                .clone();
            let (name, sample) = (f.source.clone(), f.sample.clone());
            let events = tokio::task::spawn_blocking(move || {
                crate::ingress::sample_events(&source.instance, &name, &sample)
            })
            .await
            .map_err(|e| e.to_string())??;
            events
                .into_iter()
                .next()
                .ok_or_else(|| "the sample holds no event".to_string())
        }
        _ => {
            let value: Value =
                serde_json::from_str(&f.json).map_err(|e| format!("the event is not JSON: {e}"))?;
            rules::testing::event_from_json(value)
        }
    }
}

/// Runs the live set and the edited one on the form's event.
async fn run(app: &Arc<Switchyard>, f: &Form) -> Result<Outcome, String> {
    let event = event_of(app, f).await?;
    let rules = app.rules().clone();
    let path = rule_file(&rules.dir, &f.rule)?;
    let text = f.text.clone();
    let config = app.config();
    tokio::task::spawn_blocking(move || {
        let live = rules.current();
        let edited = rules::compile(&rules.engine, &path, &text)
            .map_err(|p| format!("{}: {}", p.location, p.message))?;
        let mut set: Vec<Arc<rules::Rule>> = live
            .rules()
            .iter()
            .filter(|r| r.name != edited.name)
            .cloned()
            .collect();
        let name = edited.name.clone();
        set.push(Arc::new(edited));
        set.sort_by(|a, b| a.name.cmp(&b.name));
        let edited_set =
            RuleSet::from_rules(set).map_err(|p| format!("{}: {}", p.location, p.message))?;
        // Whether the edited rule wants the event, as routing decides it.
        let wants = edited_set
            .matching(&event.kind)
            .iter()
            .any(|&i| edited_set.rules()[i].name == name);
        let known = |a: &str| config.actions.contains_key(a);
        Ok(Outcome {
            event_type: event.kind.clone(),
            event: serde_json::to_string_pretty(&event).unwrap_or_default(),
            wants,
            live: views(live.route(&rules.engine, &rules.limits, &event), &known),
            edited: views(
                edited_set.route(&rules.engine, &rules.limits, &event),
                &known,
            ),
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The playground page, with what a run found (if it ran).
fn show(
    s: &Session,
    app: &Switchyard,
    form: Form,
    problem: Option<String>,
    outcome: Option<Outcome>,
) -> Result<String, askama::Error> {
    let mut sources: Vec<String> = app.sources().keys().cloned().collect();
    sources.sort();
    let set = app.rules().current();
    let checks = checks_of(app, &form.rule, &form.text);
    Playground {
        nav: nav(s, "rules"),
        csrf: s.csrf.clone(),
        can_save: s.role == Role::Admin,
        form,
        sources,
        rule_names: set.rules().iter().map(|r| r.name.clone()).collect(),
        problem,
        outcome,
        checks,
    }
    .render()
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let list = page_route(
        warp::path!("ui" / "rules"),
        session.clone(),
        app.clone(),
        list,
    );
    let playground = page_route(
        warp::path!("ui" / "rules" / "playground"),
        session.clone(),
        app,
        playground,
    );
    let form_body = || {
        warp::body::content_length_limit(MAX_TEXT + 16 * 1024)
            .and(warp::body::form::<HashMap<String, String>>())
    };
    let try_it = warp::path!("ui" / "rules" / "playground")
        .and(warp::post())
        .and(session.clone())
        .and(form_body())
        .and(with_app.clone())
        .then(try_it);
    let check = warp::path!("ui" / "rules" / "check")
        .and(warp::post())
        .and(session.clone())
        .and(form_body())
        .and(with_app.clone())
        .then(check_text);
    let save = warp::path!("ui" / "rules" / "save")
        .and(warp::post())
        .and(session)
        .and(form_body())
        .and(with_app)
        .then(save);
    list.or(playground)
        .unify()
        .or(try_it)
        .unify()
        .or(save)
        .unify()
        .or(check)
        .unify()
}

/// `GET /ui/rules`: the live rules, what each wants and calls, and the
/// files that do not compile.
async fn list(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let set = app.rules().current();
    let rules = set
        .rules()
        .iter()
        .map(|r| RuleRow {
            name: r.name.clone(),
            file: r.path.display().to_string(),
            patterns: r.patterns.join(", "),
            actions: r.literal_actions().join(", "),
        })
        .collect();
    let broken = set
        .broken
        .iter()
        .map(|p| (p.location.clone(), p.message.clone()))
        .collect();
    let notice = q.get("saved").map(|name| {
        format!(
            "{name}.rhai saved; the rules are now version {}.",
            set.version
        )
    });
    page(
        StatusCode::OK,
        RulesPage {
            nav: nav(&s, "rules"),
            notice,
            version: set.version,
            rules,
            broken,
        }
        .render(),
    )
}

/// `GET /ui/rules/playground`: a live rule's text (or a new one's) to try.
async fn playground(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let mut form = Form::of(&q);
    let set = app.rules().current();
    let live = set.rules().iter().find(|r| r.name == form.rule);
    let mut problem = None;
    if let Some(rule) = live {
        match std::fs::read_to_string(&rule.path) {
            Ok(text) => form.text = text,
            Err(e) => problem = Some(format!("{}: {e}", rule.path.display())),
        }
    } else if form.text.is_empty() {
        if form.rule.is_empty() {
            form.rule = "my-rule".into();
        }
        form.text = "const EVENTS = [\"tight.invoiceViewed\"];\n\n\
                     action(\"notify\", #{ invoice: event.data.eventData.entityId });\n"
            .into();
    }
    page(StatusCode::OK, show(&s, &app, form, problem, None))
}

/// `POST /ui/rules/playground`: the rule run on the sample, nothing done.
async fn try_it(
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let s = match may_look(s, &f) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let form = Form::of(&f);
    let (problem, outcome) = match run(&app, &form).await {
        Ok(outcome) => (None, Some(outcome)),
        Err(problem) => (Some(problem), None),
    };
    page(StatusCode::OK, show(&s, &app, form, problem, outcome))
}

/// `POST /ui/rules/save`: a rule that compiles written whole to the rules
/// folder and made live; one that does not, shown with its problem.
async fn save(
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let s = match may_act(s, &f, "save rules") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let form = Form::of(&f);
    let rules = app.rules().clone();
    let name = form.rule.clone();
    let saved = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let path = rule_file(&rules.dir, &form.rule)?;
        rules::compile(&rules.engine, &path, &form.text)
            .map_err(|p| format!("not saved: {}: {}", p.location, p.message))?;
        // Whole or not at all: the watcher never sees half a file.
        let tmp = rules.dir.join(format!(".{}.rhai.saving", form.rule));
        std::fs::write(&tmp, &form.text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("not saved: {}: {e}", path.display()))?;
        rules
            .reload()
            .map_err(|p| format!("{}: {}", p.location, p.message))?;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match saved {
        Ok(()) => {
            tracing::info!(who = s.role.who(), rule = %name, "dashboard: rule saved");
            see_other(&format!("/ui/rules?saved={name}"))
        }
        Err(problem) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            show(&s, &app, Form::of(&f), Some(problem), None),
        ),
    }
}
