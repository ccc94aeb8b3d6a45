//! Active health checks: the engine asks every address it routes to ``GET <health path>``
//! on a timer, and takes an address out of rotation after consecutive failures (a connection
//! refused, no answer within the timeout, a status of 500 or more) until consecutive
//! successes bring it back.
//!
//! One task per distinct ``host:port`` on the engine's runtime, started and stopped as
//! snapshots add and remove instances, its first probe at a random point of the first
//! interval (no storm of probes when a snapshot brings many instances). Each probe opens a
//! connection of its own, so a refused connection is seen as one. The verdict is an atomic
//! flag shared with every instance at that address ([`Probe`]); the request path reads it
//! without a lock. An address starts healthy: a new instance serves until probes say
//! otherwise. An instance serves only if the registry, the active check and the passive
//! outlier detection all let it (see [`crate::dispatch`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::metrics::{escape, float};
use crate::snapshot::Snapshot;

/// The most of a health answer's body that is read (and thrown away).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the checks run (the engine config's ``health_check_*``).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Zero: no active checks.
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that take a healthy address out.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring an unhealthy address back.
    pub healthy_threshold: u32,
}

/// The verdict on one address, shared by its probe task and its instances.
#[derive(Debug)]
pub struct Probe {
    healthy: AtomicBool,
    failures: AtomicU64,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Probe {
    /// A verdict to start from.
    pub fn new(healthy: bool) -> Self {
        Self {
            healthy: AtomicBool::new(healthy),
            failures: AtomicU64::new(0),
        }
    }

    /// Whether the address is in rotation.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Probes of the address that failed, in all.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Why one probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    /// Connected, but the answer broke off.
    Broken,
    Status(u16),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect => f.write_str("connection failed"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Broken => f.write_str("the answer broke off"),
            Failure::Status(status) => write!(f, "status {status}"),
        }
    }
}

/// The consecutive outcomes of one address: the state machine of its task.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
    successes: u32,
}

impl Streak {
    /// Count one outcome; the new verdict when it changes.
    fn record(&mut self, ok: bool, healthy: bool, settings: &Settings) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!healthy && self.successes >= settings.healthy_threshold.max(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (healthy && self.failures >= settings.unhealthy_threshold.max(1)).then_some(false)
        }
    }
}

type Address = (String, u16);

struct Target {
    path: String,
    probe: Arc<Probe>,
    task: Option<AbortHandle>,
}

#[derive(Default)]
struct Targets {
    runtime: Option<Handle>,
    by_address: HashMap<Address, Target>,
}

/// The active checks of one engine.
pub struct HealthChecks {
    settings: Settings,
    client: Client<HttpConnector, Empty<Bytes>>,
    targets: Mutex<Targets>,
}

impl HealthChecks {
    /// Checks run with ``settings`` once [`HealthChecks::start`] gives them a runtime.
    pub fn new(settings: Settings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeout));
        let client = Client::builder(TokioExecutor::new())
            // A connection per probe: a refused connection is what a dead instance looks like.
            .pool_max_idle_per_host(0)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            settings,
            client,
            targets: Mutex::default(),
        }
    }

    /// Whether checks run at all (``health_check_interval_ms`` > 0).
    pub fn enabled(&self) -> bool {
        !self.settings.interval.is_zero()
    }

    fn targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give ``snapshot``'s instances their address's probe, probe the new addresses, stop
    /// probing those no instance has any more. Of instances sharing an address, the first
    /// (by service, then address) names the health path.
    pub fn track(&self, snapshot: &mut Snapshot) {
        if !self.enabled() {
            return;
        }
        let mut targets = self.targets();
        let mut seen: HashSet<Address> = HashSet::new();
        let mut services: Vec<&String> = snapshot.instances.keys().collect();
        services.sort();
        let services: Vec<String> = services.into_iter().cloned().collect();
        for service in services {
            let Some(list) = snapshot.instances.get_mut(&service) else {
                continue;
            };
            for instance in Arc::make_mut(list) {
                let address = (instance.host.clone(), instance.port);
                let path = instance
                    .health_path
                    .clone()
                    .unwrap_or_else(|| crate::snapshot::DEFAULT_HEALTH_PATH.to_owned());
                let first = seen.insert(address.clone());
                let moved = targets
                    .by_address
                    .get(&address)
                    .is_some_and(|old| old.path != path);
                if first
                    && moved
                    && let Some(task) = targets.by_address.remove(&address).and_then(|old| old.task)
                {
                    task.abort(); // the path changed: probe afresh
                }
                let target = targets.by_address.entry(address).or_insert_with(|| Target {
                    path,
                    probe: Arc::default(),
                    task: None,
                });
                instance.probe = Some(target.probe.clone());
            }
        }
        targets.by_address.retain(|address, target| {
            let keep = seen.contains(address);
            if !keep && let Some(task) = target.task.take() {
                task.abort();
            }
            keep
        });
        self.spawn_missing(&mut targets);
    }

    fn spawn_missing(&self, targets: &mut Targets) {
        let Some(runtime) = targets.runtime.clone() else {
            return;
        };
        for ((host, port), target) in &mut targets.by_address {
            if target.task.is_none() {
                let task = runtime.spawn(probe_loop(
                    self.client.clone(),
                    self.settings,
                    host.clone(),
                    *port,
                    target.path.clone(),
                    target.probe.clone(),
                ));
                target.task = Some(task.abort_handle());
            }
        }
    }

    /// Run the probes on ``runtime`` (the engine started).
    pub fn start(&self, runtime: Handle) {
        if !self.enabled() {
            return;
        }
        let mut targets = self.targets();
        targets.runtime = Some(runtime);
        self.spawn_missing(&mut targets);
    }

    /// Stop every probe (the engine stops); the verdicts stay as they are.
    pub fn stop(&self) {
        let mut targets = self.targets();
        targets.runtime = None;
        for target in targets.by_address.values_mut() {
            if let Some(task) = target.task.take() {
                task.abort();
            }
        }
    }

    /// Addresses probed now.
    pub fn probed(&self) -> usize {
        self.targets()
            .by_address
            .values()
            .filter(|t| t.task.is_some())
            .count()
    }

    /// ``gridgate_gateway_instance_healthy`` and ``gridgate_gateway_health_check_failures_total``
    /// of ``snapshot``'s instances (none while checks are off).
    pub fn render(&self, snapshot: &Snapshot, out: &mut String) {
        let mut healthy = String::new();
        let mut failures = String::new();
        let mut services: Vec<(&String, _)> = snapshot.instances.iter().collect();
        services.sort_by_key(|(service, _)| *service);
        for (service, list) in services {
            for instance in list.iter() {
                let Some(probe) = &instance.probe else {
                    continue;
                };
                let labels = format!(
                    "service=\"{}\",instance=\"{}\"",
                    escape(service),
                    escape(&instance.instance_id)
                );
                let _ = writeln!(
                    healthy,
                    "gridgate_gateway_instance_healthy{{{labels}}} {}",
                    float(f64::from(u8::from(probe.healthy())))
                );
                let _ = writeln!(
                    failures,
                    "gridgate_gateway_health_check_failures_total{{{labels}}} {}",
                    float(probe.failures() as f64)
                );
            }
        }
        out.push_str("# HELP gridgate_gateway_instance_healthy Whether the engine's active health check keeps an instance in rotation (1) or out (0).\n# TYPE gridgate_gateway_instance_healthy gauge\n");
        out.push_str(&healthy);
        out.push_str("# HELP gridgate_gateway_health_check_failures_total Active health checks of an instance's address that failed.\n# TYPE gridgate_gateway_health_check_failures_total counter\n");
        out.push_str(&failures);
    }
}

/// One ``GET`` of the health path: Ok for an answer below 500 read in full within the timeout.
pub async fn check(
    client: &Client<HttpConnector, Empty<Bytes>>,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = Request::get(format!("http://{authority}{path}"))
        .header(http::header::USER_AGENT, "gridgate-engine-health-check")
        .body(Empty::new())
        .map_err(|_| Failure::Connect)?;
    let call = async {
        let response = client.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::Connect
            } else {
                Failure::Broken
            }
        })?;
        let status = response.status();
        // Read to the end (bounded): an answer that breaks off is a failure too.
        let _ = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await;
        Ok::<StatusCode, Failure>(status)
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(failure)) => Err(failure),
        Ok(Ok(status)) if status.as_u16() >= 500 => Err(Failure::Status(status.as_u16())),
        Ok(Ok(_)) => Ok(()),
    }
}

async fn probe_loop(
    client: Client<HttpConnector, Empty<Bytes>>,
    settings: Settings,
    host: String,
    port: u16,
    path: String,
    probe: Arc<Probe>,
) {
    let period = settings.interval;
    let jitter = fastrand::u64(0..period.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streak = Streak::default();
    loop {
        ticks.tick().await;
        let outcome = check(&client, &host, port, &path, settings.timeout).await;
        if outcome.is_err() {
            probe.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(now) = streak.record(outcome.is_ok(), probe.healthy(), &settings) {
            probe.healthy.store(now, Ordering::Relaxed);
            log_change(&host, port, &path, now, outcome.err());
        }
    }
}

/// One structlog-like JSON line on stderr when an address leaves or rejoins the rotation
/// (rare: at most once per threshold of probes).
fn log_change(host: &str, port: u16, path: &str, healthy: bool, failure: Option<Failure>) {
    let mut line = serde_json::Map::new();
    let (event, level) = if healthy {
        ("instance_healthy", "info")
    } else {
        ("instance_unhealthy", "warning")
    };
    line.insert("event".into(), event.into());
    line.insert("level".into(), level.into());
    line.insert("logger".into(), "gridgate.health".into());
    line.insert("address".into(), format!("{host}:{port}").into());
    line.insert("path".into(), path.into());
    if let Some(failure) = failure {
        line.insert("reason".into(), failure.to_string().into());
    }
    eprintln!("{}", serde_json::Value::Object(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
        }
    }

    #[test]
    fn a_probe_fails_on_a_refused_connection_a_silent_server_and_a_5xx() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let checks = HealthChecks::new(settings());
            let client = &checks.client;
            let timeout = Duration::from_millis(300);
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let closed_port = closed.local_addr().unwrap().port();
            drop(closed);
            assert_eq!(
                check(client, "127.0.0.1", closed_port, "/healthz", timeout).await,
                Err(Failure::Connect)
            );
            // Accepts, never answers.
            let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let silent_port = silent.local_addr().unwrap().port();
            let _held = tokio::spawn(async move {
                let mut open = Vec::new();
                while let Ok((stream, _)) = silent.accept().await {
                    open.push(stream);
                }
            });
            assert_eq!(
                check(client, "127.0.0.1", silent_port, "/healthz", timeout).await,
                Err(Failure::Timeout)
            );
            // Answers with the status asked for in the path.
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = server.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((stream, _)) = server.accept().await {
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            |request: Request<hyper::body::Incoming>| async move {
                                let status: u16 = request.uri().path()[1..].parse().unwrap();
                                let mut response = http::Response::new(http_body_util::Full::new(
                                    Bytes::from_static(b"{}"),
                                ));
                                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            for (path, expected) in [
                ("/200", Ok(())),
                ("/404", Ok(())),
                ("/499", Ok(())),
                ("/500", Err(Failure::Status(500))),
                ("/503", Err(Failure::Status(503))),
            ] {
                assert_eq!(
                    check(client, "127.0.0.1", port, path, timeout).await,
                    expected,
                    "{path}"
                );
            }
        });
    }

    #[test]
    fn consecutive_outcomes_flip_the_verdict_at_the_thresholds() {
        let settings = settings();
        let mut streak = Streak::default();
        assert_eq!(streak.record(false, true, &settings), None);
        assert_eq!(
            streak.record(true, true, &settings),
            None,
            "the run is broken"
        );
        assert_eq!(streak.record(false, true, &settings), None);
        assert_eq!(streak.record(false, true, &settings), Some(false));
        assert_eq!(streak.record(true, false, &settings), None);
        assert_eq!(streak.record(true, false, &settings), None);
        assert_eq!(streak.record(false, false, &settings), None, "starts over");
        for _ in 0..2 {
            assert_eq!(streak.record(true, false, &settings), None);
        }
        assert_eq!(streak.record(true, false, &settings), Some(true));
    }
}
