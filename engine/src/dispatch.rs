//! Dispatch (gateway/upstream.py): interface → service → instance → call, over pooled
//! keep-alive connections (hyper-util's client).
//!
//! Retries: once, on another instance, when nothing was sent (the connection could not be
//! opened) or the interface is idempotent (after a broken connection or a 5xx answer). The
//! interface's timeout bounds the whole call, retry included. What reached the upstream
//! decides: [`CallError`] says whether anything was sent.
//!
//! Which instances: an instance is live when the registry marks it healthy (the snapshot
//! keeps only those, or all when none is), the active health check has it in rotation and
//! the outlier detection has not ejected it. A call goes to a live instance; when none is,
//! to any (panic mode, as the registry and the outlier detection each have it). For an
//! interface with a canary the instances are split by version ([`crate::canary`]): the
//! live ones of the chosen version, else (or for the retry, when those are used up) the live
//! ones of the other version; only when neither has a live instance, any instance of the
//! chosen version, then of the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use crate::balancers::Balance;
use crate::balancers::Balancers;
use crate::canary::Sides;
use crate::errors::GatewayError;
use crate::outlier::Outlier;
use crate::snapshot::{Instance, Snapshot};

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
    /// The versions to choose from, for an interface with a canary.
    pub sides: Option<Sides>,
}

/// A business system's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub instance: String,
    /// The version that answered, for an interface with a canary.
    pub version: Option<Arc<str>>,
}

/// Instances a call may pick from, and the version they serve (with a canary).
#[derive(Default)]
pub struct Pool<'a> {
    pub instances: Vec<&'a Instance>,
    pub version: Option<Arc<str>>,
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

    /// Those of ``members`` that are live: in the active check's rotation and not ejected.
    fn live<'a>(
        &self,
        members: impl Iterator<Item = &'a Instance>,
        now: Instant,
    ) -> Vec<&'a Instance> {
        self.outlier
            .live(members.filter(|i| i.probed_healthy()), now)
    }

    /// The pools to pick from, in order (see the module's documentation); empty ones last.
    pub fn pools<'a>(
        &self,
        every: &'a [Instance],
        sides: Option<&Sides>,
        now: Instant,
    ) -> [Pool<'a>; 2] {
        let Some(sides) = sides else {
            let live = self.live(every.iter(), now);
            let instances = if live.is_empty() {
                every.iter().collect()
            } else {
                live
            };
            return [
                Pool {
                    instances,
                    version: None,
                },
                Pool::default(),
            ];
        };
        let members = |version: &str| -> Vec<&'a Instance> {
            every
                .iter()
                .filter(|i| i.serves(version, &sides.stable))
                .collect()
        };
        let pool = |instances, version: &Arc<str>| Pool {
            instances,
            version: Some(version.clone()),
        };
        let (chosen_all, other_all) = (members(&sides.chosen), members(&sides.other));
        let chosen = self.live(chosen_all.iter().copied(), now);
        let other = self.live(other_all.iter().copied(), now);
        let [first, second] = if chosen.is_empty() && other.is_empty() {
            [
                pool(chosen_all, &sides.chosen),
                pool(other_all, &sides.other),
            ]
        } else {
            [pool(chosen, &sides.chosen), pool(other, &sides.other)]
        };
        if first.instances.is_empty() {
            [second, first]
        } else {
            [first, second]
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
            let pools = self.pools(every, outbound.sides.as_ref(), now);
            let Some((instance, version)) = pools.iter().find_map(|pool| {
                // A rotation per version: the two sets of instances must not reset each other's.
                let keyed;
                let rotation = match &pool.version {
                    Some(version) => {
                        keyed = format!("{}@{version}", outbound.interface);
                        keyed.as_str()
                    }
                    None => outbound.interface.as_str(),
                };
                self.balancers
                    .pick(
                        outbound.balance,
                        rotation,
                        &pool.instances,
                        outbound.balance_key.as_deref(),
                        &tried,
                    )
                    .map(|instance| (instance, pool.version.clone()))
            }) else {
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
                version,
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
    // One look at the few names the answer has, not a lookup for each name it might have.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str() == "x-trace-id" || HOP_BY_HOP.contains(&name.as_str()))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Probe;

    fn instance(id: &str, version: Option<&str>, healthy: bool) -> Instance {
        Instance {
            instance_id: id.into(),
            host: "127.0.0.1".into(),
            port: 1,
            weight: 100,
            healthy: true,
            version: version.map(str::to_owned),
            health_path: None,
            probe: Some(Arc::new(Probe::new(healthy))),
        }
    }

    fn sides(chosen: &str, other: &str) -> Sides {
        Sides {
            chosen: chosen.into(),
            other: other.into(),
            stable: "1".into(),
        }
    }

    fn ids<'a>(pools: &'a [Pool<'a>; 2]) -> Vec<(Vec<&'a str>, Option<String>)> {
        pools
            .iter()
            .map(|p| {
                (
                    p.instances.iter().map(|i| i.instance_id.as_str()).collect(),
                    p.version.as_deref().map(str::to_owned),
                )
            })
            .collect()
    }

    fn pool(
        members: &[&'static str],
        version: Option<&str>,
    ) -> (Vec<&'static str>, Option<String>) {
        (members.to_vec(), version.map(str::to_owned))
    }

    #[test]
    fn the_chosen_version_first_the_other_as_fallback_and_no_third_version() {
        let every = [
            instance("c", Some("2"), true),
            instance("s", None, true),
            instance("s1", Some("1"), true),
            instance("x", Some("3"), true),
        ];
        let dispatcher = Dispatcher::default();
        let now = Instant::now();
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("2", "1")), now)),
            [pool(&["c"], Some("2")), pool(&["s", "s1"], Some("1"))]
        );
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("1", "2")), now)),
            [pool(&["s", "s1"], Some("1")), pool(&["c"], Some("2"))]
        );
        // Without a canary every version serves.
        assert_eq!(
            ids(&dispatcher.pools(&every, None, now)),
            [pool(&["c", "s", "s1", "x"], None), pool(&[], None)]
        );
    }

    #[test]
    fn a_canary_without_a_live_instance_falls_back_to_the_stable_ones() {
        let dispatcher = Dispatcher::default();
        let now = Instant::now();
        // Out by the active check.
        let every = [instance("c", Some("2"), false), instance("s", None, true)];
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("2", "1")), now)),
            [pool(&["s"], Some("1")), pool(&[], Some("2"))]
        );
        // Ejected by the outlier detection.
        let every = [instance("c", Some("2"), true), instance("s", None, true)];
        for _ in 0..5 {
            dispatcher.outlier.report("c", false, now);
        }
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("2", "1")), now)),
            [pool(&["s"], Some("1")), pool(&[], Some("2"))]
        );
        // No canary instance at all.
        let every = [instance("s", None, true)];
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("2", "1")), now)),
            [pool(&["s"], Some("1")), pool(&[], Some("2"))]
        );
    }

    #[test]
    fn when_nothing_is_live_every_instance_serves_the_chosen_side_first() {
        let dispatcher = Dispatcher::default();
        let now = Instant::now();
        let every = [
            instance("c", Some("2"), false),
            instance("s", None, false),
            instance("x", Some("3"), false),
        ];
        assert_eq!(
            ids(&dispatcher.pools(&every, Some(&sides("2", "1")), now)),
            [pool(&["c"], Some("2")), pool(&["s"], Some("1"))]
        );
        assert_eq!(
            ids(&dispatcher.pools(&every, None, now)),
            [pool(&["c", "s", "x"], None), pool(&[], None)]
        );
        // One live instance of the three: only it (the active check and the registry agree).
        let every = [instance("a", None, false), instance("b", None, true)];
        assert_eq!(
            ids(&dispatcher.pools(&every, None, now)),
            [pool(&["b"], None), pool(&[], None)]
        );
    }
}
