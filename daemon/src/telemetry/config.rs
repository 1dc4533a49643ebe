//! `[telemetry]`: where traces go, how many are kept, and where an
//! operator looks one up. Every key is optional; with none set (and no
//! `OTEL_EXPORTER_OTLP_*ENDPOINT` in the environment) nothing is traced.

use serde::Deserialize;

/// The `[telemetry]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector (`http://127.0.0.1:4318`; `/v1/traces` is
    /// added unless the path says otherwise). Else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// The share of webhooks traced, 0.0 to 1.0 (a webhook's whole trace
    /// is kept or not). Else `OTEL_TRACES_SAMPLER_ARG` with
    /// `OTEL_TRACES_SAMPLER=parentbased_traceidratio` or `traceidratio`;
    /// else every one.
    pub sample_ratio: Option<f64>,
    /// The service's name in the traces. Else `OTEL_SERVICE_NAME`, else
    /// `switchyard`.
    pub service_name: Option<String>,
    /// Where the dashboard links a trace: `https://…/{trace_id}`.
    pub trace_url: Option<String>,
    /// Finished spans waiting to be sent at most; beyond, new ones are
    /// dropped (and counted), never waited for.
    pub queue: Option<usize>,
}

/// Spans waiting for the exporter at most, unless `queue` says.
pub const DEFAULT_QUEUE: usize = 4_096;

impl TelemetryConfig {
    /// What is wrong with the values (each message names its key).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(r) = self.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                problems.push("telemetry.sample_ratio must be between 0.0 and 1.0".into());
            }
        }
        if let Some(url) = &self.trace_url {
            if !url.contains("{trace_id}") {
                problems.push("telemetry.trace_url must contain {trace_id}".into());
            }
        }
        if self.queue == Some(0) {
            problems.push("telemetry.queue must be at least 1".into());
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                problems.push("telemetry.endpoint must be an http:// or https:// URL".into());
            }
        }
        problems
    }

    /// The collector's traces URL, from the config or the environment
    /// (`env`: how a variable is read), if any: tracing is on with one.
    pub fn traces_url(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            return None;
        }
        let with_path = |base: String| {
            let base = base.trim_end_matches('/').to_string();
            if base.ends_with("/v1/traces") {
                base
            } else {
                format!("{base}/v1/traces")
            }
        };
        if let Some(e) = &self.endpoint {
            return Some(with_path(e.clone()));
        }
        // The signal's own variable is the whole URL; the general one a base.
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .filter(|v| !v.is_empty())
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .filter(|v| !v.is_empty())
                    .map(with_path)
            })
    }

    /// The share of webhooks traced.
    pub fn ratio(&self, env: impl Fn(&str) -> Option<String>) -> f64 {
        if let Some(r) = self.sample_ratio {
            return r;
        }
        let sampler = env("OTEL_TRACES_SAMPLER").unwrap_or_default();
        let arg = env("OTEL_TRACES_SAMPLER_ARG").and_then(|a| a.trim().parse::<f64>().ok());
        match sampler.as_str() {
            "always_off" | "parentbased_always_off" => 0.0,
            "traceidratio" | "parentbased_traceidratio" => arg.unwrap_or(1.0).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }

    pub fn service(&self, env: impl Fn(&str) -> Option<String>) -> String {
        self.service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME").filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "switchyard".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_config_or_the_standard_variables_say_where_and_how_much() {
        let none = TelemetryConfig::default();
        assert_eq!(none.traces_url(env(&[])), None);
        assert_eq!(
            none.traces_url(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            none.traces_url(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")
            ])),
            Some("http://t:1/x".into())
        );
        assert_eq!(
            none.traces_url(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            None
        );
        let set = TelemetryConfig {
            endpoint: Some("http://127.0.0.1:4318".into()),
            sample_ratio: Some(0.25),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            set.traces_url(env(&[])),
            Some("http://127.0.0.1:4318/v1/traces".into())
        );
        assert_eq!(set.ratio(env(&[("OTEL_TRACES_SAMPLER_ARG", "0.5")])), 0.25);
        assert_eq!(
            none.ratio(env(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ])),
            0.01
        );
        assert_eq!(none.ratio(env(&[])), 1.0);
        assert_eq!(none.service(env(&[("OTEL_SERVICE_NAME", "rx")])), "rx");
        assert_eq!(none.service(env(&[])), "switchyard");
        let bad = TelemetryConfig {
            sample_ratio: Some(2.0),
            trace_url: Some("https://x/".into()),
            endpoint: Some("127.0.0.1:4318".into()),
            queue: Some(0),
            ..TelemetryConfig::default()
        };
        assert_eq!(bad.check().len(), 4, "{:?}", bad.check());
    }
}
