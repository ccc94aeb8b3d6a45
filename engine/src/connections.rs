//! Connection caps of the gateway listener (web/connections.py ``ConnectionGuard``).
//!
//! A connection beyond the listener's cap, or beyond the cap of one client address (its /64
//! for IPv6, addresses.py ``client_bucket``), is refused at once: a short ``503
//! flow.overloaded`` with ``Retry-After: 1`` and ``Connection: close`` is written into the
//! empty send buffer and the descriptor is freed before the next accept. Trusted proxies
//! (load balancers, which carry every client) are not held to the per-address cap. Above
//! 3/4 of the cap the listener is under pressure and idle keep-alives are cut short (see
//! [`crate::http1`]). Refusals and early closes are counted in the metrics and logged at
//! most every 10 s, from the accept loop's ticker, never from the request path.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Context;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use tokio::sync::Notify;

use crate::errors::{GatewayError, PROBLEM_CONTENT_TYPE};
use crate::metrics::{Metrics, Refused, TimedOut};

/// Above this share of its cap a listener is under pressure (``PRESSURE_RATIO``).
pub const PRESSURE_RATIO: f64 = 0.75;
/// Refusals and early closes are logged at most this often (``LOG_INTERVAL_S``).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Idle connections are woken for a new pressure at most this often.
pub const WAKE_INTERVAL: Duration = Duration::from_secs(1);
/// Client addresses named in one refusal log line, at most.
const SAMPLE_ADDRESSES: usize = 5;

/// The unit one client is counted in: an IPv4 address as it is, an IPv6 address as its /64,
/// an IPv4-mapped IPv6 address as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    V4(Ipv4Addr),
    V6(u64),
}

impl Bucket {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Bucket::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Bucket::V4(v4),
                None => Bucket::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Bucket {
    /// As addresses.py writes it: ``10.0.0.1``, ``2001:db8::/64``.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bucket::V4(v4) => write!(f, "{v4}"),
            Bucket::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

/// The peers whose ``X-Forwarded-For`` the gateway believes and which are not held to the
/// per-address cap (load balancers): addresses and CIDR ranges (``10.0.0.0/8``, ``fd00::/8``).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse the entries of ``trusted_proxies``; the first invalid one is named in the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let text = entry.as_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        format!(
                            "trusted_proxies: {text:?} is neither an address nor a CIDR range \
                             (like 10.0.0.0/8 or fd00::/8)"
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether ``address`` (an IPv4-mapped IPv6 address as its IPv4 address) is trusted.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// What the listener allows (``ConnectionPolicy``).
#[derive(Clone, Debug)]
pub struct Policy {
    pub max_connections: usize,
    pub max_per_address: usize,
    /// Trusted proxies (addresses and ranges): no per-address cap.
    pub exempt: TrustedProxies,
    pub first_byte: Duration,
    pub head: Duration,
    pub keep_alive: Duration,
    pub pressure_keep_alive: Duration,
}

#[derive(Default)]
struct Tally {
    pending: Vec<(&'static str, u64)>,
    addresses: BTreeSet<String>,
    logged_at: Option<Instant>,
}

impl Tally {
    fn count(&mut self, reason: &'static str, address: Option<Bucket>) {
        match self.pending.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.pending.push((reason, 1)),
        }
        if let Some(address) = address
            && self.addresses.len() < SAMPLE_ADDRESSES
        {
            self.addresses.insert(address.to_string());
        }
    }

    /// One structlog-like JSON line of what was counted since the last one, unless that line
    /// is too recent.
    fn flush(&mut self, event: &str, level: &str, open: u64, now: Instant) -> Option<String> {
        if self.pending.is_empty()
            || self
                .logged_at
                .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            return None;
        }
        self.logged_at = Some(now);
        let mut line = serde_json::Map::new();
        line.insert("event".into(), event.into());
        line.insert("level".into(), level.into());
        line.insert("logger".into(), "gridgate.connections".into());
        line.insert("listener".into(), "gateway".into());
        line.insert("open".into(), open.into());
        for (reason, count) in self.pending.drain(..) {
            line.insert(reason.into(), count.into());
        }
        if !self.addresses.is_empty() {
            let addresses: Vec<String> = std::mem::take(&mut self.addresses).into_iter().collect();
            line.insert("addresses".into(), addresses.into());
        }
        Some(serde_json::Value::Object(line).to_string())
    }
}

/// Admits, counts and times the connections of the gateway listener.
pub struct ConnectionGuard {
    pub policy: Policy,
    pressure_at: f64,
    by_address: Mutex<HashMap<Bucket, usize>>,
    /// Every admitted connection's [`Signal`], to wake them all at a stop, and when the
    /// listener comes under pressure (so that idle ones look at their deadline again at
    /// once and keep the short one for the rest of their idle time; each one's own timer
    /// does the rest). Pressure wakes on rising edges only, at most once per
    /// [`WAKE_INTERVAL`] (the ticker sends one it held back): a count that hovers at 3/4 of
    /// the cap must not wake every connection at each accept.
    signals: Mutex<HashMap<u64, Arc<Signal>>>,
    next_id: AtomicU64,
    under: AtomicBool,
    woken: Mutex<(Option<Instant>, bool)>,
    /// Signalled when the last connection closes (the drain waits for it).
    all_closed: Notify,
    refused_log: Mutex<Tally>,
    timed_out_log: Mutex<Tally>,
}

/// How the listener reaches one connection's task: a stop, or a look at its deadlines.
///
/// Not a `watch` or `Notify` shared by all connections: a waiting `Notified` takes the
/// shared lock at every poll, i.e. at every wake of every connection on every core. This is
/// one atomic waker per connection, registered without a lock.
#[derive(Default)]
pub struct Signal {
    waker: AtomicWaker,
    stop: AtomicBool,
}

impl Signal {
    /// Wake the task of ``cx`` on the next signal (call before looking at the state).
    pub fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The engine is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// One admitted connection; dropping it releases its place.
pub struct Admission {
    shared: Arc<crate::engine::Shared>,
    bucket: Bucket,
    id: u64,
    pub signal: Arc<Signal>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared
            .guard
            .release(self.bucket, self.id, &self.shared.metrics);
    }
}

impl ConnectionGuard {
    pub fn new(policy: Policy, metrics: &Metrics) -> Self {
        metrics
            .connections
            .max
            .store(policy.max_connections as u64, Ordering::Relaxed);
        Self {
            pressure_at: policy.max_connections as f64 * PRESSURE_RATIO,
            policy,
            by_address: Mutex::new(HashMap::new()),
            signals: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            under: AtomicBool::new(false),
            woken: Mutex::new((None, false)),
            all_closed: Notify::new(),
            refused_log: Mutex::default(),
            timed_out_log: Mutex::default(),
        }
    }

    fn exempt(&self, address: IpAddr) -> bool {
        self.policy.exempt.contains(address)
    }

    /// Count a new connection from ``address`` in, or say why it is refused (the caller
    /// writes [`refusal`] and closes it).
    pub fn admit(
        shared: &Arc<crate::engine::Shared>,
        address: IpAddr,
    ) -> Result<Admission, Refused> {
        let guard = &shared.guard;
        let counters = &shared.metrics.connections;
        let bucket = Bucket::of(address);
        let refused = {
            let mut by_address = guard.by_address.lock().unwrap_or_else(|e| e.into_inner());
            let open = counters.open.load(Ordering::Relaxed) as usize;
            let held = by_address.get(&bucket).copied().unwrap_or(0);
            if open >= guard.policy.max_connections {
                Some(Refused::ListenerFull)
            } else if held >= guard.policy.max_per_address && !guard.exempt(address) {
                Some(Refused::AddressFull)
            } else {
                *by_address.entry(bucket).or_insert(0) += 1;
                counters.open.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        if let Some(reason) = refused {
            counters.refused(reason);
            guard
                .refused_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .count(reason.label(), Some(bucket));
            return Err(reason);
        }
        let id = guard.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        guard
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, signal.clone());
        guard.update_pressure(&shared.metrics);
        Ok(Admission {
            shared: shared.clone(),
            bucket,
            id,
            signal,
        })
    }

    fn release(&self, bucket: Bucket, id: u64, metrics: &Metrics) {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        {
            let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(held) = by_address.get_mut(&bucket) {
                *held -= 1;
                if *held == 0 {
                    by_address.remove(&bucket);
                }
            }
        }
        let left = metrics.connections.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.update_pressure(metrics);
        if left == 0 {
            self.all_closed.notify_waiters();
        }
    }

    fn update_pressure(&self, metrics: &Metrics) {
        let now = self.under_pressure(metrics);
        if self.under.swap(now, Ordering::Relaxed) != now && now {
            self.wake_idle(false);
        }
    }

    /// Wake the idle connections (see [`ConnectionGuard::signals`]); from the ticker, only
    /// when a wake was held back and the pressure lasts.
    fn wake_idle(&self, from_ticker: bool) {
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (last, owed) = &mut *woken;
        if from_ticker && !*owed {
            return;
        }
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WAKE_INTERVAL) {
            *owed = true;
            return;
        }
        *last = Some(now);
        *owed = false;
        drop(woken);
        for signal in self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            signal.waker.wake();
        }
    }

    /// The engine stops: every connection finishes what is in flight and closes.
    pub fn stop_all(&self) {
        for signal in self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            signal.stop.store(true, Ordering::Release);
            signal.waker.wake();
        }
    }

    /// More than 3/4 of the cap is in use.
    pub fn under_pressure(&self, metrics: &Metrics) -> bool {
        metrics.connections.open.load(Ordering::Relaxed) as f64 > self.pressure_at
    }

    /// How long a connection with nothing in flight may stay idle, and why if that is
    /// shorter than the keep-alive: a ``fresh`` one has not sent a byte yet; ``pressed``, the
    /// listener was under pressure at some point of this idle time (the caller keeps that:
    /// closing idle connections relieves the pressure, and judged afresh at each one's
    /// deadline only as many would close as bring the count back to 3/4 of the cap, which
    /// ones depending on timer order, where web/http1.py's sweep closes every one that is
    /// past the short keep-alive).
    pub fn idle_deadline(&self, pressed: bool, fresh: bool) -> (Duration, Option<TimedOut>) {
        let keep_alive = self.policy.keep_alive;
        let mut limit = keep_alive;
        if pressed {
            limit = limit.min(self.policy.pressure_keep_alive);
        }
        if fresh {
            limit = limit.min(self.policy.first_byte);
        }
        if limit >= keep_alive {
            (keep_alive, None)
        } else if fresh {
            (limit, Some(TimedOut::FirstByte))
        } else {
            (limit, Some(TimedOut::IdleUnderPressure))
        }
    }

    /// A connection was closed because a deadline passed.
    pub fn closed_early(&self, reason: TimedOut, metrics: &Metrics) {
        metrics.connections.timed_out(reason);
        self.timed_out_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(reason.label(), None);
    }

    /// Called every second: a held-back wake, and the log lines.
    pub fn tick(&self, metrics: &Metrics) {
        if self.under_pressure(metrics) {
            self.wake_idle(true);
        }
        self.flush_log(metrics);
    }

    /// Log what was counted (at most every [`LOG_INTERVAL`]).
    pub fn flush_log(&self, metrics: &Metrics) {
        let open = metrics.connections.open.load(Ordering::Relaxed);
        let now = Instant::now();
        let refused = self
            .refused_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush("connections_refused", "warning", open, now);
        let timed_out = self
            .timed_out_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush("connections_timed_out", "info", open, now);
        for line in [refused, timed_out].into_iter().flatten() {
            eprintln!("{line}");
        }
    }

    /// Wait until every connection is closed.
    pub async fn all_closed(&self, metrics: &Metrics) {
        loop {
            let notified = self.all_closed.notified();
            if metrics.connections.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A whole ``Connection: close`` answer of ``error`` as web/http1.py writes it, straight to
/// the socket: the status line, ``content-type``, ``x-trace-id`` (when there is one),
/// ``content-length``, the error's own headers, ``date`` (when asked), ``connection: close``
/// (connections.py ``raw_problem``; the errors http1.py answers this way have no headers of
/// their own, so its order is the same).
pub fn raw_answer(error: &GatewayError, trace_id: Option<&str>, date: bool) -> Vec<u8> {
    let body = error.body_traced(trace_id);
    let status = http::StatusCode::from_u16(error.status())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown")
    );
    if let Some(trace_id) = trace_id {
        head.push_str(&format!("x-trace-id: {trace_id}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n", body.len()));
    for (name, value) in error.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if date {
        head.push_str(&format!(
            "date: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        ));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut answer = head.into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// The answer to a connection refused for the caps (``_REFUSAL``): no trace id, no date.
pub fn refusal() -> Vec<u8> {
    raw_answer(
        &GatewayError::Overloaded {
            detail: "too many open connections".into(),
            retry_after: 1,
        },
        None,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_as_addresses_py() {
        let bucket = |s: &str| Bucket::of(s.parse().unwrap()).to_string();
        assert_eq!(bucket("10.1.2.3"), "10.1.2.3");
        assert_eq!(bucket("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("::ffff:192.0.2.7"), "192.0.2.7");
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_ranges() {
        let trusted =
            TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8", "fd00::/8", " 2001:db8::/64 "])
                .unwrap();
        let has = |s: &str| trusted.contains(s.parse().unwrap());
        assert!(has("127.0.0.1"));
        assert!(!has("127.0.0.2"));
        assert!(has("10.200.3.4"));
        assert!(!has("11.0.0.1"));
        assert!(has("fd12:3456::1"));
        assert!(!has("fe80::1"));
        assert!(has("2001:db8::ffff:1"), "a /64 bucket as before");
        assert!(!has("2001:db8:0:1::1"));
        assert!(
            has("::ffff:10.1.2.3"),
            "an IPv4-mapped peer as its IPv4 address"
        );
        for bad in ["10.0.0.0/33", "example.com", "10.0.0", "fd00::/129", ""] {
            let error = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(
                error.starts_with("trusted_proxies: ") && !error.contains('\n'),
                "{error}"
            );
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn an_invalid_trusted_proxy_refuses_the_config_in_one_line() {
        let error = serde_json::from_str::<crate::engine::Config>(
            r#"{"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/40"]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with(
                "trusted_proxies: \"10.0.0.0/40\" is neither an address nor a CIDR range"
            ),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        let config: crate::engine::Config =
            serde_json::from_str(r#"{"trusted_proxies": ["10.0.0.0/8"]}"#).unwrap();
        assert!(config.trusted_proxies.contains("10.3.2.1".parse().unwrap()));
    }

    #[test]
    fn the_refusal_is_python_s() {
        let text = String::from_utf8(refusal()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: 173\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"type\":\"urn:gridgate:error:flow.overloaded\",\"title\":\"Overloaded\",\"status\":503,\"detail\":\"too many open connections\",\"code\":\"flow.overloaded\",\"trace_id\":null,\"retry_after\":1}"
        );
    }

    #[test]
    fn log_lines_are_rate_limited() {
        let mut tally = Tally::default();
        let start = Instant::now();
        tally.count(
            "address_full",
            Some(Bucket::of("10.0.0.1".parse().unwrap())),
        );
        tally.count("address_full", None);
        let line = tally
            .flush("connections_refused", "warning", 3, start)
            .unwrap();
        assert!(line.contains("\"address_full\":2"), "{line}");
        assert!(line.contains("\"addresses\":[\"10.0.0.1\"]"), "{line}");
        tally.count("listener_full", None);
        assert!(
            tally
                .flush(
                    "connections_refused",
                    "warning",
                    3,
                    start + Duration::from_secs(1)
                )
                .is_none()
        );
        let later = tally
            .flush("connections_refused", "warning", 3, start + LOG_INTERVAL)
            .unwrap();
        assert!(later.contains("\"listener_full\":1") && !later.contains("address_full"));
    }
}
