//! `switchyard-bench rules`: what routing one event costs as the rules
//! folder grows, with exactly one rule wanting the event, and what a reload
//! of a large folder costs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;
use switchyard::rules::{engine, Limits, RuleSet, Rules};

/// Writes `n` rule files: `r0000` wants the event, the others want other
/// types, half by exact name and half by glob.
fn write_rules(dir: &Path, n: usize) -> Result<()> {
    for i in 0..n {
        let events = if i == 0 {
            r#""tight.invoiceViewed""#.to_string()
        } else if i % 2 == 0 {
            format!(r#""tight.other{i}""#)
        } else {
            format!(r#""acme{i}.*""#)
        };
        let text = format!(
            "const EVENTS = [{events}];\n\
             let invoice = event.data?.eventData?.entityId ?? event.subject;\n\
             action(\"notify-owner\", #{{ subject: `viewed ${{invoice}}`, invoice: invoice }});\n"
        );
        std::fs::write(dir.join(format!("r{i:04}.rhai")), text)?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn run(iterations: usize) -> Result<()> {
    let event = switchyard::rules::testing::event_from_json(json!({
        "type": "tight.invoiceViewed",
        "data": {"eventData": {"entityId": "inv_1"}},
    }))
    .map_err(|e| anyhow!(e))?;
    let mut medians = Vec::new();
    for n in [1usize, 100, 1000] {
        let dir = tempfile::tempdir()?;
        write_rules(dir.path(), n)?;
        let limits = Limits::default();
        let started = Instant::now();
        let set = RuleSet::load_dir(&engine(&limits), dir.path())
            .map_err(|p| anyhow!("{}", switchyard::config::Problems(p)))?;
        let load = started.elapsed();
        let rules = Rules::new(engine(&limits), limits, dir.path().to_path_buf(), set);
        // Warm up, then time each routing on its own.
        for _ in 0..iterations / 10 {
            std::hint::black_box(rules.route(&event));
        }
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let (_, runs) = rules.route(&event);
            times.push(t.elapsed());
            assert_eq!(runs.len(), 1, "exactly one rule matches");
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        medians.push(p50);
        // A reload after one file changed, and one with nothing changed.
        std::fs::write(
            dir.path().join("r0000.rhai"),
            "const EVENTS = [\"tight.invoiceViewed\"];\naction(\"notify-owner\", #{ changed: true });\n",
        )?;
        let t = Instant::now();
        rules.reload().map_err(|p| anyhow!("{p}"))?;
        let reload_one = t.elapsed();
        let t = Instant::now();
        rules.reload().map_err(|p| anyhow!("{p}"))?;
        let reload_none = t.elapsed();
        println!(
            "{}",
            json!({
                "rules": n, "route_p50_us": micros(p50), "route_p99_us": micros(p99),
                "cold_load_ms": load.as_secs_f64() * 1e3,
                "reload_one_changed_ms": reload_one.as_secs_f64() * 1e3,
                "reload_unchanged_ms": reload_none.as_secs_f64() * 1e3,
                "iterations": iterations,
            })
        );
    }
    println!(
        "route p50 with 1000 rules / with 1 rule = {:.2}x (target <= 2x); 100 rules: {:.2}x",
        micros(medians[2]) / micros(medians[0]),
        micros(medians[1]) / micros(medians[0]),
    );
    Ok(())
}
