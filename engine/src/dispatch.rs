//! Dispatch (gateway/upstream.py): interface → service → instance → call, over pooled
//! keep-alive connections (hyper-util's client).
//!
//! Retries: once, on another instance, when nothing was sent (the connection could not be
//! opened) or the interface is idempotent (after a broken connection or a 5xx answer). The
//! interface's timeout bounds the whole call, retry included. What reached the upstream
//! decides: [`CallError`] says whether anything was sent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use crate::balancers::Balance;
use crate::balancers::Balancers;
use crate::errors::GatewayError;
use crate::outlier::Outlier;
use crate::snapshot::Snapshot;

/// The largest answer the gateway passes on (upstream.py ``MAX_RESPONSE_BYTES``).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Headers that describe one hop only, never forwarded either way (plus host, length).
pub const HOP_BY_HOP: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// The request to forward.
pub struct Outbound {
    pub method: Method,
    /// Path and (canonical) query, as the business system receives them.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub service: String,
    pub interface: String,
    pub balance: Balance,
    pub balance_key: Option<String>,
    pub idempotent: bool,
    pub timeout: Duration,
}

/// A business system's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub instance: String,
}

/// How one attempt failed.
#[derive(Debug)]
enum CallError {
    /// No connection: nothing was sent, any call may be retried.
    ConnectFailed,
    /// Sent, but no complete answer.
    Broken,
    TooLarge,
}

/// The upstream side of the engine: pool, balancers, outlier detection.
pub struct Dispatcher {
    client: Client<HttpConnector, Full<Bytes>>,
    pub balancers: Balancers,
    pub outlier: Outlier,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new(256, Duration::from_secs(4))
    }
}

impl Dispatcher {
    /// A dispatcher keeping up to ``per_host`` idle connections per instance.
    pub fn new(per_host: usize, idle_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            balancers: Balancers::default(),
            outlier: Outlier::default(),
        }
    }

    async fn attempt(
        &self,
        host: &str,
        port: u16,
        outbound: &Outbound,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CallError> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = Request::builder()
            .method(outbound.method.clone())
            .uri(format!("http://{authority}{}", outbound.target))
            .body(Full::new(outbound.body.clone()))
            .map_err(|_| CallError::ConnectFailed)?;
        *request.headers_mut() = outbound.headers.clone();
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                CallError::ConnectFailed
            } else {
                CallError::Broken
            }
        })?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    CallError::TooLarge
                } else {
                    CallError::Broken
                }
            })?;
        Ok((parts.status, parts.headers, collected.to_bytes()))
    }

    /// Send ``outbound`` to an instance of its service, retrying once when that is safe.
    pub async fn call(
        &self,
        snapshot: &Snapshot,
        outbound: &Outbound,
    ) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + outbound.timeout);
        let timed_out = || {
            GatewayError::UpstreamTimeout(format!("{} did not answer in time", outbound.service))
        };
        let empty = Vec::new();
        let every = snapshot
            .instances
            .get(&outbound.service)
            .map(|v| v.as_slice())
            .unwrap_or(&empty);
        let mut tried: Vec<&str> = Vec::with_capacity(2);
        let mut last: Option<Answer> = None;
        for attempt in 0..2 {
            let now = Instant::now();
            let candidates = self.outlier.eligible(every, now);
            let Some(instance) = self.balancers.pick(
                outbound.balance,
                &outbound.interface,
                &candidates,
                outbound.balance_key.as_deref(),
                &tried,
            ) else {
                break;
            };
            tried.push(&instance.instance_id);
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            let id = instance.instance_id.as_str();
            self.outlier.record_start(id, now);
            self.balancers.acquire(id);
            let result = tokio::time::timeout_at(
                deadline,
                self.attempt(&instance.host, instance.port, outbound),
            )
            .await;
            self.balancers.release(id);
            let (status, headers, body) = match result {
                Err(_) => {
                    self.outlier.report(id, false, Instant::now());
                    return Err(timed_out());
                }
                Ok(Err(CallError::TooLarge)) => {
                    self.outlier.report(id, true, Instant::now());
                    return Err(GatewayError::UpstreamBadResponse(
                        "the business system's answer is too large".into(),
                    ));
                }
                Ok(Err(error)) => {
                    self.outlier.report(id, false, Instant::now());
                    if outbound.idempotent || matches!(error, CallError::ConnectFailed) {
                        continue;
                    }
                    break;
                }
                Ok(Ok(answer)) => answer,
            };
            self.outlier
                .report(id, status.as_u16() < 500, Instant::now());
            let answer = Answer {
                status,
                headers: answer_headers(headers),
                body,
                instance: id.to_owned(),
            };
            if status.as_u16() >= 500 && outbound.idempotent && attempt == 0 {
                last = Some(answer);
                continue;
            }
            return Ok(answer);
        }
        last.ok_or_else(|| {
            GatewayError::UpstreamUnavailable(format!(
                "no instance of {} could take the call",
                outbound.service
            ))
        })
    }
}

/// The answer's headers to pass on: not hop-by-hop, not the upstream's own trace id.
pub fn answer_headers(mut headers: HeaderMap) -> HeaderMap {
    for name in HOP_BY_HOP.iter().chain(&["x-trace-id"]) {
        headers.remove(*name);
    }
    headers
}
