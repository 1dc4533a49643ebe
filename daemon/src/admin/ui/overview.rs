//! The overview: is everything flowing? Webhooks per minute over the last
//! hour by source and outcome (server-drawn SVG, no script), ingest and
//! end-to-end latency, the backlog and its oldest job, dead letters,
//! actions not running, rule files that do not compile — each linking to
//! the page that explains it.
//!
//! Traffic and latency are this instance's (kept in memory by
//! `metrics::recent`); what waits in the store is everyone's.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::Session;
use super::{nav, page, page_route, Nav, SessionFilter};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::metrics::recent::{Kind, Latency, Quantiles, MINUTES};
use crate::store::now_ms;

/// The latency window.
const LATENCY_MINUTES: usize = 15;
/// The chart's size (SVG user units): a bar per minute.
const BAR: u32 = 10;
const HEIGHT: u32 = 90;

/// A bar's segment in a chart.
struct Rect {
    x: u32,
    y: u32,
    h: u32,
    class: &'static str,
    title: String,
}

/// One source's last hour.
struct SourceChart {
    name: String,
    accepted: u64,
    repeated: u64,
    rejected: u64,
    /// Refusal reasons with their counts, most first.
    reasons: Vec<(String, u64)>,
    peak: u64,
    rects: Vec<Rect>,
}

struct Gate {
    name: String,
    state: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    nav: Option<Nav>,
    problem: Option<String>,
    width: u32,
    height: u32,
    minutes: usize,
    charts: Vec<SourceChart>,
    /// Sources without a webhook in the charts' hour.
    idle: Vec<String>,
    /// The webhooks a minute at the top of every chart.
    top: u64,
    latency_minutes: usize,
    ingest: (String, String, u64),
    end_to_end: (String, String, u64),
    unrouted: u64,
    pending: u64,
    oldest_pending: String,
    dead_letters: u64,
    gates: Vec<Gate>,
    broken: Vec<(String, String)>,
    shared: bool,
}

fn ms(q: Option<f64>) -> String {
    match q {
        None => "-".into(),
        Some(s) if s < 0.01 => format!("{:.1} ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1e3),
        Some(s) => format!("{s:.1} s"),
    }
}

fn shown(q: Quantiles) -> (String, String, u64) {
    (ms(q.p50), ms(q.p99), q.count)
}

fn age(since_ms: i64, now: i64) -> String {
    let s = (now - since_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// The top of the charts' common scale: the busiest minute of any source,
/// rounded up to 1, 2 or 5 times a power of ten, so every chart reads
/// against the same labelled ceiling.
fn ceiling(peak: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if peak <= step.saturating_mul(m) {
                return step.saturating_mul(m);
            }
        }
        if step > u64::MAX / 10 {
            return u64::MAX;
        }
        step *= 10;
    }
}

/// Every source's last hour: charts of those that had webhooks, on one
/// scale (accepted at the bottom, duplicates, stale events and handshakes
/// above, refusals on top), and the names of those that had none, folded
/// into one line. Returns the charts, the idle names and the scale's top.
fn charts(app: &Switchyard, now: i64) -> (Vec<SourceChart>, Vec<String>, u64) {
    let minutes = app.metrics().recent.counts(now, Kind::Webhook, MINUTES);
    let mut names: BTreeMap<String, ()> = app.sources().keys().map(|k| (k.clone(), ())).collect();
    for m in &minutes {
        for (name, _, _) in &m.counts {
            names.insert(name.clone(), ());
        }
    }
    let mut idle = Vec::new();
    let mut counted = Vec::new();
    for name in names.into_keys() {
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let per_minute: Vec<[u64; 3]> = minutes
            .iter()
            .map(|m| {
                let mut bar = [0u64; 3];
                for (_, outcome, n) in m.counts.iter().filter(|(s, _, _)| *s == name) {
                    match outcome.as_str() {
                        "accepted" => bar[0] += n,
                        "duplicate" | "stale" | "handshake" => bar[1] += n,
                        reason => {
                            bar[2] += n;
                            *reasons.entry(reason.to_string()).or_default() += n;
                        }
                    }
                }
                bar
            })
            .collect();
        if per_minute.iter().all(|b| b.iter().sum::<u64>() == 0) {
            idle.push(name);
        } else {
            counted.push((name, per_minute, reasons));
        }
    }
    let peak = counted
        .iter()
        .flat_map(|(_, bars, _)| bars.iter().map(|b| b.iter().sum::<u64>()))
        .max()
        .unwrap_or(0);
    let top = ceiling(peak);
    let scale = HEIGHT as f64 / top.max(1) as f64;
    let charts = counted
        .into_iter()
        .map(|(name, per_minute, reasons)| {
            let mut chart = SourceChart {
                name,
                accepted: 0,
                repeated: 0,
                rejected: 0,
                reasons: reasons.into_iter().collect(),
                peak: per_minute.iter().map(|b| b.iter().sum()).max().unwrap_or(0),
                rects: Vec::new(),
            };
            chart.reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
            for (i, (bar, m)) in per_minute.iter().zip(&minutes).enumerate() {
                chart.accepted += bar[0];
                chart.repeated += bar[1];
                chart.rejected += bar[2];
                let mut room = HEIGHT;
                let ago = minutes.len() - 1 - i;
                for (n, class, what) in [
                    (bar[0], "accepted", "accepted"),
                    (bar[1], "repeated", "duplicate, stale or handshake"),
                    (bar[2], "rejected", "rejected"),
                ] {
                    if n == 0 || room == 0 {
                        continue;
                    }
                    // At least a pixel: a minute with one webhook beside
                    // one with thousands still shows.
                    let h = ((n as f64 * scale).round() as u32).clamp(1, room);
                    room -= h;
                    chart.rects.push(Rect {
                        x: i as u32 * BAR,
                        y: room,
                        h,
                        class,
                        title: format!("{n} {what}, {ago} min ago (minute {})", m.at),
                    });
                }
            }
            chart
        })
        .collect();
    (charts, idle, top)
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    page_route(
        warp::path!("ui" / "overview"),
        session,
        app,
        |s: Session, _, app: Arc<Switchyard>| async move {
            let now = now_ms();
            let store = app.store();
            let mut problem = None;
            let backlog = store.backlog().await.unwrap_or_else(|e| {
                problem = Some(format!("the store did not answer: {e}"));
                Default::default()
            });
            let waiting = store.waiting().await.unwrap_or_default();
            let gates = ops::actions(store.as_ref(), &app.config())
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.state != "closed")
                .map(|a| Gate {
                    name: a.name,
                    state: a.state,
                    reason: a.reason.unwrap_or_default(),
                })
                .collect();
            let rules = app.rules().current();
            let recent = &app.metrics().recent;
            let (charts, idle, top) = charts(&app, now);
            let view = Overview {
                nav: nav(&s, "overview"),
                problem,
                width: MINUTES as u32 * BAR,
                height: HEIGHT,
                minutes: MINUTES,
                charts,
                idle,
                top,
                latency_minutes: LATENCY_MINUTES,
                ingest: shown(recent.quantiles(now, Latency::Ingest, LATENCY_MINUTES)),
                end_to_end: shown(recent.quantiles(now, Latency::EndToEnd, LATENCY_MINUTES)),
                unrouted: backlog.unrouted_events,
                pending: backlog.pending_jobs,
                oldest_pending: waiting
                    .oldest_pending_job_ms
                    .map(|t| age(t, now))
                    .unwrap_or_else(|| "-".into()),
                dead_letters: waiting.dead_letters,
                gates,
                broken: rules
                    .broken
                    .iter()
                    .map(|p| (p.location.clone(), p.message.clone()))
                    .collect(),
                shared: store.shared().is_some(),
            };
            page(StatusCode::OK, view.render())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::ceiling;

    #[test]
    fn the_scale_tops_at_one_two_or_five_times_a_power_of_ten() {
        for (peak, top) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 5),
            (9, 10),
            (11, 20),
            (25_786, 50_000),
            (u64::MAX, u64::MAX),
        ] {
            assert_eq!(ceiling(peak), top, "{peak}");
        }
    }
}
