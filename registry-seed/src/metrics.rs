//! The seed's Prometheus metrics: enrollments by result, errors by code, request latency, and
//! whatever the NTP server counts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
struct Inner {
    enrollments: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    latency_counts: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner);
    }

    /// One enrollment answered with `result` (`enrolled`, `pending`, `waiting`, or an error code).
    pub fn enrollment(&self, result: &'static str) {
        self.with(|m| *m.enrollments.entry(result).or_default() += 1);
    }

    pub fn error(&self, code: &str) {
        self.with(|m| *m.errors.entry(code.to_string()).or_default() += 1);
    }

    pub fn latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        self.with(|m| {
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    m.latency_counts[i] += 1;
                }
            }
            m.latency_sum += secs;
            m.latency_count += 1;
        });
    }

    /// The Prometheus text exposition of every metric; `extra` is appended (the NTP server's).
    pub fn render(&self, extra: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP launcher_seed_enrollments_total Enrollment answers by result.\n");
        out.push_str("# TYPE launcher_seed_enrollments_total counter\n");
        for (result, n) in &inner.enrollments {
            let _ = writeln!(
                out,
                "launcher_seed_enrollments_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP launcher_seed_errors_total Error answers by code.\n");
        out.push_str("# TYPE launcher_seed_errors_total counter\n");
        for (code, n) in &inner.errors {
            let _ = writeln!(out, "launcher_seed_errors_total{{code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP launcher_seed_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE launcher_seed_request_duration_seconds histogram\n");
        for (bound, n) in BUCKETS.iter().zip(inner.latency_counts) {
            let _ = writeln!(
                out,
                "launcher_seed_request_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let (sum, count) = (inner.latency_sum, inner.latency_count);
        let _ = writeln!(
            out,
            "launcher_seed_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "launcher_seed_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "launcher_seed_request_duration_seconds_count {count}");
        out.push_str(extra);
        out
    }
}
