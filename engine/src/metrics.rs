//! Metrics: the gateway's Prometheus series, as gridgate/web/metrics.py names them.
//!
//! Counted with atomics in sharded maps (labels come from the catalog and five status
//! classes, a bounded set); rendered in the text format on ``/metrics``.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::access_log::LogCounters;

/// Upper bounds of the latency buckets (web/metrics.py ``LATENCY_BUCKETS``).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Histogram {
    /// Per bucket (not cumulative), then +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum in nanoseconds.
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// The gateway's request counter and latency histogram.
#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(String, String, &'static str), AtomicU64>,
    latency: DashMap<String, Histogram>,
    /// Calls of interfaces with a canary, by the version that answered.
    canary: DashMap<(String, Arc<str>), AtomicU64>,
    /// The listener's connections (web/connections.py ``_ConnectionMetrics``).
    pub connections: ConnectionCounters,
}

/// Why a connection was refused as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    ListenerFull = 0,
    AddressFull = 1,
}

impl Refused {
    pub const ALL: [Refused; 2] = [Refused::ListenerFull, Refused::AddressFull];

    pub fn label(self) -> &'static str {
        match self {
            Refused::ListenerFull => "listener_full",
            Refused::AddressFull => "address_full",
        }
    }
}

/// Which deadline of the listener closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedOut {
    FirstByte = 0,
    Head = 1,
    Request = 2,
    IdleUnderPressure = 3,
}

impl TimedOut {
    pub const ALL: [TimedOut; 4] = [
        TimedOut::FirstByte,
        TimedOut::Head,
        TimedOut::Request,
        TimedOut::IdleUnderPressure,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TimedOut::FirstByte => "first_byte",
            TimedOut::Head => "head",
            TimedOut::Request => "request",
            TimedOut::IdleUnderPressure => "idle_under_pressure",
        }
    }
}

/// The four ``gridgate_connections_*`` series of the gateway listener.
#[derive(Default)]
pub struct ConnectionCounters {
    refused: [AtomicU64; 2],
    timed_out: [AtomicU64; 4],
    /// Connections open now.
    pub open: AtomicU64,
    /// The listener's cap.
    pub max: AtomicU64,
}

impl ConnectionCounters {
    pub fn refused(&self, reason: Refused) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn timed_out(&self, reason: TimedOut) {
        self.timed_out[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused_total(&self, reason: Refused) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    pub fn timed_out_total(&self, reason: TimedOut) -> u64 {
        self.timed_out[reason as usize].load(Ordering::Relaxed)
    }

    /// The series as prometheus_client writes them: a counter's samples only for the
    /// reasons seen so far, the gauges always.
    fn render(&self, out: &mut String) {
        out.push_str("# HELP gridgate_connections_refused_total Connections closed as soon as accepted, by listener and reason.\n# TYPE gridgate_connections_refused_total counter\n");
        for reason in Refused::ALL {
            let count = self.refused_total(reason);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "gridgate_connections_refused_total{{listener=\"gateway\",reason=\"{}\"}} {}",
                    reason.label(),
                    float(count as f64)
                );
            }
        }
        out.push_str("# HELP gridgate_connections_timed_out_total Connections closed because a deadline of the listener passed, by reason.\n# TYPE gridgate_connections_timed_out_total counter\n");
        for reason in TimedOut::ALL {
            let count = self.timed_out_total(reason);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "gridgate_connections_timed_out_total{{listener=\"gateway\",reason=\"{}\"}} {}",
                    reason.label(),
                    float(count as f64)
                );
            }
        }
        let _ = write!(
            out,
            "# HELP gridgate_connections_open Connections open now, by listener.\n# TYPE gridgate_connections_open gauge\ngridgate_connections_open{{listener=\"gateway\"}} {}\n# HELP gridgate_connections_max The most connections a listener keeps open (after fitting to the descriptors).\n# TYPE gridgate_connections_max gauge\ngridgate_connections_max{{listener=\"gateway\"}} {}\n",
            float(self.open.load(Ordering::Relaxed) as f64),
            float(self.max.load(Ordering::Relaxed) as f64),
        );
    }
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

pub(crate) fn float(value: f64) -> String {
    // Python's repr of a float: always a decimal point (prometheus_client writes "3.0").
    if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

impl Metrics {
    /// Count one request and its latency.
    pub fn observe(&self, channel: &str, interface: &str, status: u16, seconds: f64) {
        let class = CLASSES
            .get((status / 100).saturating_sub(1) as usize)
            .copied()
            .unwrap_or("other");
        let key = (channel.to_owned(), interface.to_owned(), class);
        match self.requests.get(&key) {
            Some(count) => count.fetch_add(1, Ordering::Relaxed),
            None => self
                .requests
                .entry(key)
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        };
        let index = BUCKETS.partition_point(|bound| *bound < seconds);
        let add = |h: &Histogram| {
            h.counts[index].fetch_add(1, Ordering::Relaxed);
            h.sum_ns
                .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        };
        match self.latency.get(interface) {
            Some(histogram) => add(&histogram),
            None => add(&self.latency.entry(interface.to_owned()).or_default()),
        }
    }

    /// Count a call of ``interface`` (it has a canary) answered by ``version``.
    pub fn served_version(&self, interface: &str, version: &Arc<str>) {
        let key = (interface.to_owned(), version.clone());
        match self.canary.get(&key) {
            Some(count) => count.fetch_add(1, Ordering::Relaxed),
            None => self
                .canary
                .entry(key)
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The text exposition of every series.
    pub fn render(&self, log: &LogCounters) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP gridgate_gateway_requests_total Gateway requests by channel, interface and status (codes from the catalog only).\n# TYPE gridgate_gateway_requests_total counter\n");
        for entry in self.requests.iter() {
            let (channel, interface, class) = entry.key();
            let _ = writeln!(
                out,
                "gridgate_gateway_requests_total{{channel=\"{}\",interface=\"{}\",status=\"{class}\"}} {}",
                escape(channel),
                escape(interface),
                float(entry.value().load(Ordering::Relaxed) as f64)
            );
        }
        out.push_str("# HELP gridgate_gateway_request_duration_seconds Gateway request latency by interface.\n# TYPE gridgate_gateway_request_duration_seconds histogram\n");
        for entry in self.latency.iter() {
            let interface = escape(entry.key());
            let mut total = 0u64;
            for (index, count) in entry.value().counts.iter().enumerate() {
                total += count.load(Ordering::Relaxed);
                let le = BUCKETS
                    .get(index)
                    .map_or_else(|| "+Inf".to_owned(), |b| float(*b));
                let _ = writeln!(
                    out,
                    "gridgate_gateway_request_duration_seconds_bucket{{interface=\"{interface}\",le=\"{le}\"}} {}",
                    float(total as f64)
                );
            }
            let _ = writeln!(
                out,
                "gridgate_gateway_request_duration_seconds_count{{interface=\"{interface}\"}} {}",
                float(total as f64)
            );
            let sum = entry.value().sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "gridgate_gateway_request_duration_seconds_sum{{interface=\"{interface}\"}} {sum}"
            );
        }
        out.push_str("# HELP gridgate_gateway_canary_requests_total Calls of interfaces with a canary, by interface and the version that answered.\n# TYPE gridgate_gateway_canary_requests_total counter\n");
        for entry in self.canary.iter() {
            let (interface, version) = entry.key();
            let _ = writeln!(
                out,
                "gridgate_gateway_canary_requests_total{{interface=\"{}\",version=\"{}\"}} {}",
                escape(interface),
                escape(version),
                float(entry.value().load(Ordering::Relaxed) as f64)
            );
        }
        let load = |c: &AtomicU64| float(c.load(Ordering::Relaxed) as f64);
        let _ = write!(
            out,
            "# HELP gridgate_log_records_dropped_total Access-log records the log service dropped, by reason (queue_full: the buffer is behind).\n# TYPE gridgate_log_records_dropped_total counter\ngridgate_log_records_dropped_total{{reason=\"queue_full\"}} {}\ngridgate_log_records_dropped_total{{reason=\"buffer_unavailable\"}} {}\n# HELP gridgate_log_records_appended_total Access-log records appended to the buffer.\n# TYPE gridgate_log_records_appended_total counter\ngridgate_log_records_appended_total {}\n# HELP gridgate_log_records_queued Access-log records waiting in memory.\n# TYPE gridgate_log_records_queued gauge\ngridgate_log_records_queued {}\n",
            load(&log.dropped_queue_full),
            load(&log.dropped_unavailable),
            load(&log.appended),
            load(&log.queued),
        );
        self.connections.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_python_series() {
        let metrics = Metrics::default();
        metrics.observe("app", "demo.customer", 200, 0.002);
        metrics.observe("none", "unmatched", 404, 0.0001);
        let text = metrics.render(&LogCounters::default());
        assert!(text.contains("gridgate_gateway_requests_total{channel=\"app\",interface=\"demo.customer\",status=\"2xx\"} 1.0\n"));
        assert!(text.contains("gridgate_gateway_requests_total{channel=\"none\",interface=\"unmatched\",status=\"4xx\"} 1.0\n"));
        assert!(text.contains("gridgate_gateway_request_duration_seconds_bucket{interface=\"demo.customer\",le=\"0.001\"} 0.0\n"));
        assert!(text.contains("gridgate_gateway_request_duration_seconds_bucket{interface=\"demo.customer\",le=\"0.0025\"} 1.0\n"));
        assert!(text.contains("gridgate_gateway_request_duration_seconds_bucket{interface=\"demo.customer\",le=\"+Inf\"} 1.0\n"));
        assert!(text.contains("gridgate_log_records_appended_total 0.0\n"));
        assert!(text.contains("gridgate_connections_open{listener=\"gateway\"} 0.0\n"));
        assert!(!text.contains("gridgate_connections_refused_total{"));
    }

    #[test]
    fn renders_the_connection_series() {
        let metrics = Metrics::default();
        metrics.connections.max.store(16_384, Ordering::Relaxed);
        metrics.connections.open.store(3, Ordering::Relaxed);
        metrics.connections.refused(Refused::AddressFull);
        metrics.connections.timed_out(TimedOut::FirstByte);
        metrics.connections.timed_out(TimedOut::FirstByte);
        let text = metrics.render(&LogCounters::default());
        assert!(text.contains("# TYPE gridgate_connections_refused_total counter\ngridgate_connections_refused_total{listener=\"gateway\",reason=\"address_full\"} 1.0\n"));
        assert!(!text.contains("reason=\"listener_full\""));
        assert!(text.contains(
            "gridgate_connections_timed_out_total{listener=\"gateway\",reason=\"first_byte\"} 2.0\n"
        ));
        assert!(text.contains("gridgate_connections_open{listener=\"gateway\"} 3.0\n"));
        assert!(text.contains("gridgate_connections_max{listener=\"gateway\"} 16384.0\n"));
    }
}
