//! The engine: shared state, the hyper server on its own tokio runtime, snapshot swaps.
//!
//! Python builds an [`Engine`] from a JSON config, starts it (the runtime runs on threads of
//! its own, one worker per core), then pushes snapshots. Nothing on the request path calls
//! back into Python.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::connections::{Admission, ConnectionGuard, Policy, TrustedProxies, refusal};

/// The answer to a connection over a cap.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(refusal);
use crate::dispatch::Dispatcher;
use crate::errors::GatewayError;
use crate::flow::{Gates, RateWindows};
use crate::health::HealthChecks;
use crate::http1::Gate;
use crate::metrics::{Metrics, TimedOut};
use crate::nonces::NonceStore;
use crate::proxy::{self, Answered, Inbound};
use crate::redis_store::RedisStore;
use crate::signing::WINDOW_S;
use crate::snapshot::Snapshot;
use crate::user_auth::{TokenCache, TokenPolicy};

pub use crate::http1::{MAX_HEAD_BYTES, MAX_HEADERS};

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_max_body() -> usize {
    6 * 1_048_576
}
fn default_trusted() -> TrustedProxies {
    TrustedProxies::parse(&["127.0.0.1", "::1"]).expect("valid addresses")
}
fn default_max_nonces() -> usize {
    1_000_000
}
fn default_issuer() -> String {
    "gridgate-accounts".into()
}
fn default_audience() -> String {
    "gridgate".into()
}
fn default_lifetime() -> f64 {
    960.0
}
fn default_read_timeout() -> f64 {
    30.0
}
fn default_max_queue() -> usize {
    100_000
}
fn yes() -> bool {
    true
}
fn default_max_connections() -> usize {
    16_384
}
fn default_max_per_address() -> usize {
    256
}
fn ten_s() -> f64 {
    10.0
}
fn default_keep_alive() -> f64 {
    // web/http1.py KEEP_ALIVE_S: longer than any client's idle time between calls.
    65.0
}
fn default_pressure_keep_alive() -> f64 {
    5.0
}
fn default_redis_timeout() -> u64 {
    1000
}
fn default_stream() -> String {
    "gg:logs".into()
}
fn default_stream_max_len() -> u64 {
    1_000_000
}
fn default_health_interval() -> u64 {
    2000
}
fn default_health_timeout() -> u64 {
    1000
}
fn two() -> u32 {
    2
}

/// Settings of one engine (settings.py's ``gateway_*`` and ``token_*``), fixed at start.
#[derive(Deserialize, Debug, Clone)]
pub struct Config {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    /// Worker threads; default one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Load balancers in front: addresses or CIDR ranges; an invalid entry refuses the config.
    #[serde(default = "default_trusted")]
    pub trusted_proxies: TrustedProxies,
    #[serde(default = "default_max_nonces")]
    pub max_nonces: usize,
    #[serde(default = "default_issuer")]
    pub token_issuer: String,
    #[serde(default = "default_audience")]
    pub token_audience: String,
    #[serde(default = "default_lifetime")]
    pub token_max_lifetime_s: f64,
    #[serde(default)]
    pub client_rate_limit_per_s: Option<u32>,
    #[serde(default)]
    pub account_rate_limit_per_s: Option<u32>,
    /// The global gate (``gateway_max_concurrency`` …); none when absent.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub max_queue: u32,
    #[serde(default)]
    pub max_wait_ms: u64,
    /// The spool directory of access records; none: records are dropped and counted.
    #[serde(default)]
    pub access_log_dir: Option<String>,
    #[serde(default = "yes")]
    pub access_log_fsync: bool,
    #[serde(default = "default_max_queue")]
    pub access_log_max_queue: usize,
    #[serde(default = "default_read_timeout")]
    pub read_timeout_s: f64,
    /// Redis mode (``GRIDGATE_REDIS_URL``): nonces, rate windows and revocations shared
    /// through it, access records to its stream instead of the spool. See redis_store.rs.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// How long a request waits for Redis before it is answered 503 ``service.unavailable``.
    #[serde(default = "default_redis_timeout")]
    pub redis_timeout_ms: u64,
    /// A hash tag for every nonce and window key (Redis Cluster); none: Python's keys.
    #[serde(default)]
    pub redis_hash_tag: Option<String>,
    /// The stream of access records in Redis mode (logs/buffer.py ``RedisStreamBuffer``).
    #[serde(default = "default_stream")]
    pub access_log_stream: String,
    /// ``XADD … MAXLEN ~`` of that stream.
    #[serde(default = "default_stream_max_len")]
    pub access_log_stream_max_len: u64,
    /// Connections the listener keeps open at once (``gateway_max_connections``).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold; trusted proxies are exempt
    /// (``gateway_max_connections_per_address``).
    #[serde(default = "default_max_per_address")]
    pub max_connections_per_address: usize,
    /// A new connection must send its first byte within this time, or is closed silently.
    #[serde(default = "ten_s")]
    pub connection_first_byte_timeout_s: f64,
    /// A request's line and headers must arrive within this time of its first byte (408).
    #[serde(default = "ten_s")]
    pub request_head_timeout_s: f64,
    /// A kept-alive connection with no request in flight is closed after this long.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: f64,
    /// The idle keep-alive while more than 3/4 of ``max_connections`` are open.
    #[serde(default = "default_pressure_keep_alive")]
    pub keep_alive_under_pressure_s: f64,
    /// Active health checks: every instance's address is asked ``GET <health_path>`` this
    /// often; 0 turns them off (see health.rs).
    #[serde(default = "default_health_interval")]
    pub health_check_interval_ms: u64,
    /// A probe without a whole answer within this time failed.
    #[serde(default = "default_health_timeout")]
    pub health_check_timeout_ms: u64,
    /// Consecutive failed probes that take an address out of rotation.
    #[serde(default = "two")]
    pub health_check_unhealthy_threshold: u32,
    /// Consecutive passed probes that bring it back.
    #[serde(default = "two")]
    pub health_check_healthy_threshold: u32,
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX / 4)
}

impl Config {
    /// The listener's caps and deadlines.
    pub fn connection_policy(&self) -> Policy {
        Policy {
            max_connections: self.max_connections.max(1),
            max_per_address: self.max_connections_per_address.max(1),
            exempt: self.trusted_proxies.clone(),
            first_byte: seconds(self.connection_first_byte_timeout_s),
            head: seconds(self.request_head_timeout_s),
            keep_alive: seconds(self.keep_alive_s),
            pressure_keep_alive: seconds(self.keep_alive_under_pressure_s),
        }
    }

    /// The active health checks' settings.
    pub fn health_checks(&self) -> crate::health::Settings {
        crate::health::Settings {
            interval: Duration::from_millis(self.health_check_interval_ms),
            timeout: Duration::from_millis(self.health_check_timeout_ms.max(1)),
            unhealthy_threshold: self.health_check_unhealthy_threshold.max(1),
            healthy_threshold: self.health_check_healthy_threshold.max(1),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub snapshot: ArcSwap<Snapshot>,
    pub nonces: NonceStore,
    pub windows: RateWindows,
    pub gates: Gates,
    pub tokens: TokenCache,
    pub token_policy: TokenPolicy,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub guard: ConnectionGuard,
    /// Redis mode: the shared nonces and rate windows.
    pub redis: Option<RedisStore>,
    /// What the control plane last reported for ``/readyz`` and ``/metrics`` (its own checks
    /// and series): pushed every second, read without taking the GIL.
    pub probes: ArcSwapOption<ProbeReport>,
    pub health: HealthChecks,
}

/// The control plane's latest readiness answer and its own Prometheus series.
pub struct ProbeReport {
    pub ready: bool,
    pub body: Bytes,
    pub metrics: String,
    pub at: Instant,
}

/// A readiness report older than this means the control plane stopped reporting.
pub const PROBE_REPORT_STALE: Duration = Duration::from_secs(10);

impl Shared {
    /// Shared state for ``config`` (the access-log writer starts here).
    pub fn new(config: Config) -> std::io::Result<Self> {
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisStore::new(
                    url,
                    Duration::from_millis(config.redis_timeout_ms.max(1)),
                    config.redis_hash_tag.as_deref(),
                )
                .map_err(|e| std::io::Error::other(format!("redis_url: {e}")))?,
            ),
            None => None,
        };
        let access_log = match (&redis, &config.access_log_dir) {
            (Some(store), _) => AccessLog::start_stream(
                store.client().clone(),
                config.access_log_stream.clone(),
                config.access_log_stream_max_len,
                config.access_log_max_queue,
            )?,
            (None, Some(dir)) => AccessLog::start(
                Path::new(dir),
                config.access_log_max_queue,
                config.access_log_fsync,
            )?,
            (None, None) => AccessLog::disabled(),
        };
        let metrics = Metrics::default();
        let guard = ConnectionGuard::new(config.connection_policy(), &metrics);
        Ok(Self {
            guard,
            nonces: NonceStore::new(config.max_nonces, Duration::from_secs(2 * WINDOW_S)),
            windows: RateWindows::default(),
            gates: Gates::new(config.max_concurrency.map(|limit| {
                (
                    limit,
                    config.max_queue,
                    Duration::from_millis(config.max_wait_ms),
                )
            })),
            tokens: TokenCache::default(),
            token_policy: TokenPolicy {
                issuer: config.token_issuer.clone(),
                audience: config.token_audience.clone(),
                max_lifetime_s: config.token_max_lifetime_s,
                ..TokenPolicy::default()
            },
            dispatcher: Dispatcher::default(),
            metrics,
            access_log,
            redis,
            health: HealthChecks::new(config.health_checks()),
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            probes: ArcSwapOption::empty(),
            config,
        })
    }

    /// Replace the control plane's readiness answer and series (see [`ProbeReport`]).
    pub fn report_probes(&self, ready: bool, body: Vec<u8>, metrics: String) {
        self.probes.store(Some(Arc::new(ProbeReport {
            ready,
            body: Bytes::from(body),
            metrics,
            at: Instant::now(),
        })));
    }

    /// Compile and swap in a snapshot document; its version.
    pub fn load_snapshot(&self, document: &[u8]) -> Result<u64, String> {
        let mut snapshot = Snapshot::from_json(document)?;
        self.health.track(&mut snapshot);
        self.tokens.keys_loaded(&snapshot.keys);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.tokens.purge(&self.token_policy, now);
        let version = snapshot.version;
        self.snapshot.store(Arc::new(snapshot));
        Ok(version)
    }

    /// The text of every series on ``/metrics``.
    /// The engine's own series (not the control plane's: see [`ProbeReport`]).
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render(&self.access_log.counters);
        self.health.render(&self.snapshot.load(), &mut text);
        text
    }
}

fn text_answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
    trace_id: &str,
) -> Answered {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Ok(value) = HeaderValue::from_str(trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

fn probe(shared: &Shared, request: &Request<Incoming>) -> Answered {
    let trace_id = proxy::trace_id(request.headers().get("traceparent"));
    if !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        let mut answer = text_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method Not Allowed",
            &trace_id,
        );
        answer
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    match request.uri().path() {
        "/healthz" => text_answer(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok","listener":"gateway"}"#,
            &trace_id,
        ),
        "/readyz" => readiness(shared, &trace_id),
        _ => {
            let mut text = shared.render_metrics();
            if let Some(report) = shared.probes.load().as_ref() {
                text.push_str(&report.metrics);
            }
            text_answer(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
                &trace_id,
            )
        }
    }
}

/// ``/readyz``: the control plane's report while it is fresh; without one (the engine on its
/// own), whether a catalog snapshot has been loaded.
fn readiness(shared: &Shared, trace_id: &str) -> Answered {
    let (ready, body) = match shared.probes.load().as_ref() {
        Some(report) if report.at.elapsed() < PROBE_REPORT_STALE => {
            (report.ready, report.body.clone())
        }
        Some(report) => (
            false,
            Bytes::from(format!(
                r#"{{"status":"unavailable","listener":"gateway","checks":{{"control_plane":"failing"}},"details":{{"control_plane":"no report for {} s"}}}}"#,
                report.at.elapsed().as_secs()
            )),
        ),
        None if shared.snapshot.load().revision >= 0 => (
            true,
            Bytes::from_static(
                br#"{"status":"ready","listener":"gateway","checks":{"catalog":"ok"}}"#,
            ),
        ),
        None => (
            false,
            Bytes::from_static(
                br#"{"status":"unavailable","listener":"gateway","checks":{"catalog":"failing"}}"#,
            ),
        ),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text_answer(status, "application/json", body, trace_id)
}

async fn serve_request(
    shared: Arc<Shared>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Result<Answered, Infallible> {
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return Ok(probe(&shared, &request));
    }
    let (parts, body) = request.into_parts();
    let max = shared.config.max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || GatewayError::TooLarge(format!("the body must be at most {max} bytes"));
    let (body, rejected) = if declared.is_some_and(|n| n > max as u64) {
        (Bytes::new(), Some(too_large()))
    } else {
        let read = tokio::time::timeout(
            Duration::from_secs_f64(shared.config.read_timeout_s),
            Limited::new(body, max).collect(),
        )
        .await;
        match read {
            Ok(Ok(collected)) => (collected.to_bytes(), None),
            Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                (Bytes::new(), Some(too_large()))
            }
            // Broken chunks, or the client closed inside the body.
            Ok(Err(_)) => (
                Bytes::new(),
                Some(GatewayError::Malformed(
                    "the request is not valid HTTP/1.1".into(),
                )),
            ),
            Err(_) => {
                shared
                    .guard
                    .closed_early(TimedOut::Request, &shared.metrics);
                (
                    Bytes::new(),
                    Some(GatewayError::RequestTimeout(
                        "the request did not arrive in full in time".into(),
                    )),
                )
            }
        }
    };
    let close = rejected.is_some();
    let inbound = Inbound {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
        peer,
        rejected,
    };
    let mut answer = proxy::handle(&shared, inbound).await;
    if close {
        // Part of the request stays unread: this connection cannot carry another one.
        answer
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(answer)
}

/// One admitted connection: hyper over the [`Gate`], until the client leaves, a deadline
/// passes, or the engine stops (then in-flight requests finish and idle connections close).
async fn serve_connection(
    shared: Arc<Shared>,
    builder: Arc<http1::Builder>,
    stream: TcpStream,
    peer: IpAddr,
    admission: Admission,
) {
    let _ = stream.set_nodelay(true);
    let signal = admission.signal.clone();
    let gate = Gate::new(stream, shared.clone());
    let service = {
        let shared = shared.clone();
        // Boxed: `poll_without_shutdown` (which gives the socket back) wants an Unpin future.
        service_fn(move |request| Box::pin(serve_request(shared.clone(), peer, request)))
    };
    let mut connection = builder.serve_connection(TokioIo::new(gate), service);
    let mut stopping = false;
    // A wake from the signal polls the connection again: at a stop it shuts down gracefully;
    // under pressure the gate looks at its (shorter) idle deadline.
    let _ = std::future::poll_fn(|cx| {
        signal.register(cx);
        if !stopping && signal.stopping() {
            stopping = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        connection.poll_without_shutdown(cx)
    })
    .await;
    let gate = connection.into_parts().io.into_inner();
    gate.finish(&signal).await;
    drop(admission);
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut builder = http1::Builder::new();
    builder
        // The gate checks heads (16 KiB, 100 headers) before hyper sees them; hyper's buffer
        // only has to hold a head that passed.
        .max_buf_size(4 * MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        // The gate keeps the head deadline (with a 408 answer) and the idle ones.
        .header_read_timeout(None)
        // A read that ends (a refused head, a deadline) still lets the requests before it
        // be answered; then the connection closes.
        .half_close(true)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of descriptors or similar: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                match ConnectionGuard::admit(&shared, peer.ip()) {
                    Ok(admission) => {
                        tokio::spawn(serve_connection(
                            shared.clone(),
                            builder.clone(),
                            stream,
                            peer.ip(),
                            admission,
                        ));
                    }
                    Err(_) => {
                        // Into the empty send buffer, without waiting for the reactor
                        // (a plain non-blocking write); the descriptor is freed at once.
                        if let Ok(stream) = stream.into_std() {
                            let _ = std::io::Write::write(&mut &stream, &REFUSAL);
                        }
                    }
                }
            }
            _ = tick.tick() => shared.guard.tick(&shared.metrics),
            changed = stop.changed() => {
                if changed.is_err() { break Duration::ZERO; }
                if let Some(grace) = *stop.borrow() { break grace; }
            }
        }
    };
    // Stop accepting; idle connections close, busy ones finish.
    drop(listener);
    shared.guard.stop_all();
    let _ = tokio::time::timeout(grace, shared.guard.all_closed(&shared.metrics)).await;
    shared.guard.flush_log(&shared.metrics);
}

/// A running (or not yet started) engine.
pub struct Engine {
    pub shared: Arc<Shared>,
    runtime: Option<Runtime>,
    stop: Option<watch::Sender<Option<Duration>>>,
    done: Option<tokio::task::JoinHandle<()>>,
    address: Option<SocketAddr>,
}

impl Engine {
    /// An engine for ``config``; nothing listens until [`Engine::start`].
    pub fn new(config: Config) -> std::io::Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
            runtime: None,
            stop: None,
            done: None,
            address: None,
        })
    }

    /// Start the runtime and listen; the address bound.
    pub fn start(&mut self) -> std::io::Result<SocketAddr> {
        self.start_on(None)
    }

    /// Start the runtime and serve on ``listening`` (a socket already bound and listening,
    /// e.g. handed over by the Python process that opened every listener), or bind
    /// ``host:port`` of the config when none is given; the address served.
    pub fn start_on(
        &mut self,
        listening: Option<std::net::TcpListener>,
    ) -> std::io::Result<SocketAddr> {
        if let Some(address) = self.address {
            return Ok(address);
        }
        let config = &self.shared.config;
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("gridgate-engine")
            .enable_all()
            .build()?;
        let bind = format!("{}:{}", config.host, config.port);
        let listener = runtime.block_on(async {
            if let Some(listening) = listening {
                listening.set_nonblocking(true)?;
                return tokio::net::TcpListener::from_std(listening);
            }
            let address: SocketAddr = tokio::net::lookup_host(&bind)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("cannot resolve {bind}")))?;
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(2048)
        })?;
        let address = listener.local_addr()?;
        let (stop, receiver) = watch::channel(None);
        let done = runtime.spawn(accept_loop(listener, self.shared.clone(), receiver));
        self.shared.health.start(runtime.handle().clone());
        if let Some(store) = &self.shared.redis {
            runtime.spawn(crate::redis_store::revocation_feed(
                store.client().clone(),
                self.shared.clone(),
            ));
        }
        self.runtime = Some(runtime);
        self.stop = Some(stop);
        self.done = Some(done);
        self.address = Some(address);
        Ok(address)
    }

    /// The address bound, once started.
    pub fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    /// Stop listening, let running requests finish within ``grace``, stop the threads.
    pub fn stop(&mut self, grace: Duration) {
        if let (Some(stop), Some(runtime)) = (self.stop.take(), self.runtime.take()) {
            self.shared.health.stop();
            let _ = stop.send(Some(grace));
            if let Some(done) = self.done.take() {
                let _ = runtime.block_on(async {
                    tokio::time::timeout(grace + Duration::from_secs(1), done).await
                });
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
            self.shared.access_log.flush(Duration::from_secs(5));
        }
        self.address = None;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
