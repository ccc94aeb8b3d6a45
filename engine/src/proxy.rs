//! The request path: route → channel auth → user auth → permission → scope → flow →
//! dispatch → fields, then the access record and the metrics (gateway/app.py). A business
//! system's call skips user auth, permission and scope.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;

use crate::access_log::{AccessRecord, utc_now_iso};
use crate::canary::VERSION_HEADER;
use crate::channel_auth::NonceCheck;
use crate::connections::TrustedProxies;
use crate::dispatch::{Answer, HOP_BY_HOP, Outbound};
use crate::engine::Shared;
use crate::errors::{GatewayError, PROBLEM_CONTENT_TYPE};
use crate::exchange::Exchange;
use crate::fields::filter_body;
use crate::redis_store::RedisStore;
use crate::route::Routed;
use crate::snapshot::Snapshot;
use crate::{channel_auth, internal_auth, permission, scope};

/// Inbound headers the gateway consumes or sets itself (upstream.py ``CONSUMED``).
const CONSUMED: [&str; 4] = [
    "authorization",
    "x-forwarded-for",
    "x-trace-id",
    "traceparent",
];

/// A request as the server read it.
pub struct Inbound {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: IpAddr,
    /// Set when the server will not read the request in full (413, 408): answered and
    /// logged like any other refusal.
    pub rejected: Option<GatewayError>,
}

pub type Answered = Response<Full<Bytes>>;

/// The trace id of a valid W3C ``traceparent``, else a new one (web/middleware.py).
pub fn trace_id(traceparent: Option<&HeaderValue>) -> String {
    if let Some(text) = traceparent.and_then(|v| v.to_str().ok()) {
        let text = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = text.split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.len() == 4
            && hex(parts[0], 2)
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
            && parts[1] != "00000000000000000000000000000000"
        {
            return parts[1].to_owned();
        }
    }
    format!("{:032x}", fastrand::u128(..))
}

/// The caller's address: the peer, or behind trusted proxies the last hop before them (a hop
/// that is not an address is not a trusted proxy).
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&HeaderValue>,
    trusted: &TrustedProxies,
) -> String {
    let Some(forwarded) = forwarded.and_then(|v| v.to_str().ok()) else {
        return peer.to_string();
    };
    if !trusted.contains(peer) {
        return peer.to_string();
    }
    let hops: Vec<&str> = forwarded
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    hops.iter()
        .rev()
        .find(|hop| !hop.parse().is_ok_and(|ip| trusted.contains(ip)))
        .or(hops.first())
        .map_or_else(|| peer.to_string(), |hop| (*hop).to_owned())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A problem+json answer.
pub fn problem(error: &GatewayError, trace_id: &str) -> Answered {
    let mut response = Response::new(Full::new(Bytes::from(error.body(trace_id))));
    *response.status_mut() =
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if let Ok(value) = HeaderValue::from_str(trace_id) {
        headers.insert("x-trace-id", value);
    }
    for (name, value) in error.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn route<'s>(exchange: &mut Exchange<'s>, snapshot: &'s Snapshot) -> Result<(), GatewayError> {
    if snapshot.revision < 0 {
        return Err(GatewayError::NotReady(
            "the gateway is loading its catalog".into(),
        ));
    }
    match snapshot
        .router
        .route(exchange.method.as_str(), &exchange.path)
    {
        Routed::WrongMethod => Err(GatewayError::MethodNotAllowed(format!(
            "{} is not served at this path",
            exchange.method
        ))),
        Routed::Found(index, params) if snapshot.interfaces[index].enabled => {
            exchange.interface = Some(&snapshot.interfaces[index]);
            exchange.params = params;
            Ok(())
        }
        _ => Err(GatewayError::NotFound(
            "no interface is registered at this path".into(),
        )),
    }
}

fn rate_limit(exchange: &Exchange<'_>, shared: &Shared) -> Result<(), GatewayError> {
    let now = Instant::now();
    for hit in crate::flow::windows(exchange, &shared.config) {
        shared.windows.hit(&hit.key, hit.per_second, now)?;
    }
    Ok(())
}

/// The checks between channel auth and flow (user auth, permission, data scope).
fn identity<'s>(
    exchange: &mut Exchange<'s>,
    snapshot: &'s Snapshot,
    shared: &Shared,
    nonces: NonceCheck<'_>,
    now: f64,
) -> Result<(), GatewayError> {
    channel_auth::check(exchange, snapshot, nonces, now)?;
    if exchange.system.is_some() {
        // A business system acts for the platform, not for a customer: no token, so no
        // level, channel permission or 户号 scope to check (docs/decisions.md).
        return Ok(());
    }
    permission::user_auth(
        exchange,
        snapshot,
        &shared.tokens,
        &shared.token_policy,
        now,
    )?;
    permission::check(exchange, snapshot)?;
    scope::check(exchange)
}

/// Redis mode: the nonce and every rate window in one script, once the request passed the
/// checks between them. A request refused in between still spends its nonce, and a replay is
/// answered ``channel.replayed`` first, as when the nonce is checked in place (Python).
async fn shared_checks<'s>(
    exchange: &mut Exchange<'s>,
    snapshot: &'s Snapshot,
    shared: &Shared,
    store: &RedisStore,
    now: f64,
) -> Result<(), GatewayError> {
    let mut nonce = None;
    let checked = identity(
        exchange,
        snapshot,
        shared,
        NonceCheck::Deferred(&mut nonce),
        now,
    );
    let nonce = nonce.as_ref().map(|(c, n)| (c.as_str(), n.as_str()));
    match checked {
        Ok(()) => {
            let hits = crate::flow::windows(exchange, &shared.config);
            store.admit(nonce, &hits).await
        }
        Err(error) => match nonce {
            Some(nonce) => {
                store.admit(Some(nonce), &[]).await?;
                Err(error)
            }
            None => Err(error),
        },
    }
}

/// Inbound headers minus hop-by-hop ones, those named by ``Connection``, and the gateway's.
fn forward_headers(inbound: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = inbound
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(inbound.len() + 10);
    for (name, value) in inbound {
        let name_str = name.as_str();
        if HOP_BY_HOP.contains(&name_str)
            || CONSUMED.contains(&name_str)
            || name_str.starts_with("x-gg-")
            || named.iter().any(|n| n == name_str)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Append ``name: value`` (names made at compile time: no lookup per request).
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.append(name, value);
    }
}

async fn dispatch(
    exchange: &mut Exchange<'_>,
    snapshot: &Snapshot,
    shared: &Shared,
) -> Result<Answered, GatewayError> {
    let interface = exchange.interface.expect("route runs first");
    let channel = exchange.channel.map(|c| c.code.as_str());
    let rules = snapshot.field_filter(&interface.code, channel);
    let mut headers = forward_headers(&exchange.headers);
    if rules.is_some() {
        // Field rules read the JSON: ask the business system for an uncompressed answer.
        headers.remove(http::header::ACCEPT_ENCODING);
        put(
            &mut headers,
            const { HeaderName::from_static("accept-encoding") },
            "identity",
        );
    }
    put(
        &mut headers,
        const { HeaderName::from_static("x-trace-id") },
        &exchange.trace_id,
    );
    put(
        &mut headers,
        const { HeaderName::from_static("traceparent") },
        &format!("00-{}-{:016x}-01", exchange.trace_id, fastrand::u64(..)),
    );
    if !exchange.client_ip.is_empty() {
        put(
            &mut headers,
            const { HeaderName::from_static("x-forwarded-for") },
            &exchange.client_ip,
        );
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-client-ip") },
            &exchange.client_ip,
        );
    }
    if let Some(code) = channel {
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-channel") },
            code,
        );
    }
    if let Some(system) = exchange.system {
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-system") },
            &system.code,
        );
    }
    if let Some(claims) = &exchange.claims {
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-account") },
            &claims.account_id,
        );
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-level") },
            &claims.level.to_string(),
        );
        put(
            &mut headers,
            const { HeaderName::from_static("x-gg-session") },
            &claims.session_id,
        );
    }
    let target = if exchange.query_out.is_empty() {
        exchange.path.clone()
    } else {
        format!("{}?{}", exchange.path, exchange.query_out)
    };
    let service = &interface.target_service;
    let key = snapshot
        .internal_keys
        .get(service)
        .ok_or(GatewayError::Internal)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signature = internal_auth::header_value(
        key,
        service,
        now,
        exchange.method.as_str(),
        &target,
        &headers,
    );
    put(
        &mut headers,
        const { HeaderName::from_static("x-gg-internal") },
        &signature,
    );
    let balance_key = exchange
        .param("customer_no")
        .map(str::to_owned)
        .or_else(|| exchange.claims.as_ref().map(|c| c.account_id.clone()));
    let sides = interface.canary.as_ref().map(|canary| {
        crate::canary::choose(
            &interface.version,
            canary,
            exchange.header(VERSION_HEADER),
            balance_key.as_deref(),
        )
    });
    let outbound = Outbound {
        method: exchange.method.clone(),
        target,
        headers,
        body: exchange.body.clone(),
        service: service.clone(),
        interface: interface.code.clone(),
        balance: interface.balance,
        balance_key,
        idempotent: interface.idempotent,
        timeout: Duration::from_millis(interface.timeout_ms),
        sides,
    };
    let (slot, waited) = shared
        .gates
        .enter(
            &interface.code,
            interface.max_concurrency,
            interface.max_queue,
            Duration::from_millis(interface.max_wait_ms),
        )
        .await?;
    exchange.queue_wait = waited;
    let answer = shared.dispatcher.call(snapshot, &outbound).await;
    drop(slot);
    let Answer {
        status,
        headers,
        mut body,
        instance,
        version,
    } = answer?;
    exchange.upstream = Some(instance);
    if let Some(rules) = rules {
        // Data control (数据控制): drop and mask fields by the caller's level.
        let level = exchange.claims.as_ref().map_or(0, |c| c.level);
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes);
        if let Some(filtered) = filter_body(&body, content_type, rules, level)? {
            body = Bytes::from(filtered);
        }
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Some(version) = version {
        // Which side of the canary answered: the caller sees it, the metrics count it.
        shared.metrics.served_version(&interface.code, &version);
        if let Ok(value) = HeaderValue::from_str(&version) {
            response.headers_mut().insert(VERSION_HEADER, value);
        }
    }
    Ok(response)
}

async fn stages<'s>(
    exchange: &mut Exchange<'s>,
    snapshot: &'s Snapshot,
    shared: &Shared,
) -> Result<Answered, GatewayError> {
    route(exchange, snapshot)?;
    let now = unix_now();
    match &shared.redis {
        Some(store) => shared_checks(exchange, snapshot, shared, store, now).await?,
        None => {
            identity(
                exchange,
                snapshot,
                shared,
                NonceCheck::Local(&shared.nonces),
                now,
            )?;
            rate_limit(exchange, shared)?;
        }
    }
    dispatch(exchange, snapshot, shared).await
}

/// Answer one channel request: the stages, dispatch, the access record and the metrics.
pub async fn handle(shared: &Shared, inbound: Inbound) -> Answered {
    let snapshot = shared.snapshot.load_full();
    let trace_id = trace_id(inbound.headers.get("traceparent"));
    let client_ip = client_ip(
        inbound.peer,
        inbound.headers.get("x-forwarded-for"),
        &shared.config.trusted_proxies,
    );
    let mut exchange = Exchange {
        method: inbound.method,
        path: inbound.path,
        query_out: inbound.query.clone(),
        raw_query: inbound.query,
        headers: inbound.headers,
        body: inbound.body,
        client_ip,
        trace_id,
        started: Instant::now(),
        interface: None,
        params: Vec::new(),
        channel: None,
        system: None,
        claims: None,
        queue_wait: Duration::ZERO,
        upstream: None,
    };
    let result = match inbound.rejected {
        Some(error) => Err(error),
        None => stages(&mut exchange, &snapshot, shared).await,
    };
    let (response, code) = match result {
        Ok(mut response) => {
            if let Ok(value) = HeaderValue::from_str(&exchange.trace_id) {
                response.headers_mut().insert("x-trace-id", value);
            }
            (response, None)
        }
        Err(error) => (problem(&error, &exchange.trace_id), Some(error.code())),
    };
    record(shared, &exchange, &response, code);
    response
}

fn record(
    shared: &Shared,
    exchange: &Exchange<'_>,
    response: &Answered,
    code: Option<&'static str>,
) {
    use http_body::Body as _;
    let elapsed = exchange.started.elapsed().as_secs_f64();
    let interface = exchange.interface.map_or("unmatched", |i| i.code.as_str());
    // A business system is named ``system:<code>``: no schema change, never a channel code.
    let channel = exchange.caller().map(str::to_owned);
    let status = response.status().as_u16();
    shared.metrics.observe(
        channel.as_deref().unwrap_or("none"),
        interface,
        status,
        elapsed,
    );
    let round3 = |x: f64| (x * 1000.0 * 1000.0).round() / 1000.0;
    shared.access_log.offer(&AccessRecord {
        trace_id: exchange.trace_id.clone(),
        time: utc_now_iso(),
        channel,
        interface: exchange.interface.map(|i| i.code.clone()),
        account: exchange.claims.as_ref().map(|c| c.account_id.clone()),
        client_ip: (!exchange.client_ip.is_empty()).then(|| exchange.client_ip.clone()),
        method: exchange.method.to_string(),
        status,
        code,
        latency_ms: round3(elapsed),
        queue_wait_ms: round3(exchange.queue_wait.as_secs_f64()),
        upstream: exchange.upstream.clone(),
        bytes_in: exchange.body.len(),
        bytes_out: response.body().size_hint().exact().unwrap_or(0) as usize,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_from_trusted_ranges_only() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8"]).unwrap();
        let forwarded = HeaderValue::from_static("203.0.113.9, 10.1.1.1, 10.2.2.2");
        let ip = |peer: &str, header: Option<&HeaderValue>| {
            client_ip(peer.parse().unwrap(), header, &trusted)
        };
        // Behind two proxies of the range: the hop before them.
        assert_eq!(ip("10.9.9.9", Some(&forwarded)), "203.0.113.9");
        assert_eq!(ip("fd00::5", Some(&forwarded)), "203.0.113.9");
        // A peer outside the range is the client, whatever it claims.
        assert_eq!(ip("192.0.2.1", Some(&forwarded)), "192.0.2.1");
        assert_eq!(ip("10.9.9.9", None), "10.9.9.9");
        // Every hop trusted: the first one; a hop that is no address is not a proxy.
        let all = HeaderValue::from_static("10.0.0.1, 10.0.0.2");
        assert_eq!(ip("10.9.9.9", Some(&all)), "10.0.0.1");
        let odd = HeaderValue::from_static("198.51.100.7, unknown, 10.0.0.2");
        assert_eq!(ip("10.9.9.9", Some(&odd)), "unknown");
    }
}
