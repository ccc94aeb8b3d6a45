//! End to end: the engine on a real socket in front of a tiny hyper upstream, driven with
//! raw HTTP/1.1 bytes (so the limits can be tested too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::engine::{Config, Engine};
use crate::signing::sign;
use crate::user_auth::tests::{claims, jwks, signing_key, token};

const SECRET: &str = "app-secret-for-engine-tests-0001";
const INTERNAL_KEY: &str = "9302532a9a476a495b15323c0158e99bd9c59b24cb3b658089356946aecee76a";

/// A business system: echoes what it received as JSON; ``…/fail`` answers 500.
pub(crate) fn upstream(calls: Arc<AtomicUsize>) -> u16 {
    upstream_with_health(calls, Arc::new(AtomicU16::new(200)))
}

/// The same, answering ``/healthz`` (the engine's probes, not counted) with ``health``'s status.
pub(crate) fn upstream_with_health(calls: Arc<AtomicUsize>, health: Arc<AtomicU16>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (calls, health) = (calls.clone(), health.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (calls, health) = (calls.clone(), health.clone());
                        async move {
                            if request.uri().path() == "/healthz" {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(health.load(Ordering::SeqCst))
                                        .unwrap();
                                return Ok::<_, std::convert::Infallible>(response);
                            }
                            calls.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let headers: serde_json::Map<String, Value> = parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                                .collect();
                            let document = json!({
                                "path": parts.uri.path(), "query": parts.uri.query().unwrap_or(""),
                                "headers": headers, "body": String::from_utf8_lossy(&body),
                                "name": "董小明", "phone": "13812345678",
                            });
                            let status = if parts.uri.path().ends_with("/fail") {
                                500
                            } else {
                                200
                            };
                            let mut response =
                                Response::new(Full::new(Bytes::from(document.to_string())));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            response
                                .headers_mut()
                                .insert("x-trace-id", "upstream-own".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    port
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn exchange(address: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: data[end + 4..].to_vec(),
    }
}

pub(crate) fn signed(
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    nonce: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    signed_as(
        ("X-GG-Channel", "app", SECRET),
        method,
        path,
        query,
        body,
        nonce,
        extra,
    )
}

/// A request signed by ``(header, code, secret)``: a channel, or a business system
/// (``X-GG-System`` and its password).
pub(crate) fn signed_as(
    (header, code, secret): (&str, &str, &str),
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    nonce: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let ts = now().to_string();
    let signature = sign(
        secret.as_bytes(),
        method,
        path.as_bytes(),
        query.as_bytes(),
        &ts,
        nonce.as_bytes(),
        body.as_bytes(),
    );
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{header}: {code}\r\nX-GG-Timestamp: {ts}\r\nX-GG-Nonce: {nonce}\r\nX-GG-Signature: {signature}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw.into_bytes()
}

pub(crate) fn document(live: u16, dead: u16) -> Value {
    let key = signing_key();
    let interface = |code: &str, method: &str, path: &str, extra: Value| {
        let mut base = json!({
            "code": code, "method": method, "path": path, "enabled": true,
            "requires_client_auth": true, "min_level": 0, "idempotent": true, "timeout_ms": 2000,
            "target_service": "svc", "balancer": "round_robin", "channels": ["app"], "max_queue": 0,
            "max_wait_ms": 0,
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    json!({
        "version": 7, "revision": 3,
        "channels": [{"code": "app", "secret": SECRET, "enabled": true, "allowed_ips": [], "rate_limit_per_s": null}],
        "interfaces": [
            interface("t.customer", "GET", "/api/v1/customers/{customer_no}", json!({"min_level": 1, "customer_scope": "path:customer_no"})),
            interface("t.pay", "POST", "/api/v1/payments", json!({"min_level": 1, "customer_scope": "body:customer_no", "idempotent": false})),
            interface("t.limited", "GET", "/api/v1/limited", json!({"rate_limit_per_s": 2})),
            interface("t.fail", "GET", "/api/v1/x/fail", json!({})),
            interface("t.open", "GET", "/api/v1/open", json!({"requires_client_auth": false})),
        ],
        "field_rules": [{"interface": "t.customer", "channel": null, "path": "name", "action": "mask:name", "below_level": 2}],
        // The dead instance sorts first: round-robin meets it and the retry goes on.
        "instances": {"svc": [
            {"instance_id": "dead", "host": "127.0.0.1", "port": dead, "weight": 100, "healthy": true},
            {"instance_id": "live", "host": "127.0.0.2", "port": live, "weight": 100, "healthy": true},
        ]},
        "jwks": jwks(&key, "k1"),
        "internal_keys": {"svc": INTERNAL_KEY},
    })
}

#[test]
fn the_pipeline_end_to_end() {
    let calls = Arc::new(AtomicUsize::new(0));
    let live = upstream(calls.clone());
    // A port nothing listens on: connecting fails, so even a payment may go elsewhere.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spool = std::env::temp_dir().join(format!("gg-e2e-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let config: Config = serde_json::from_value(json!({
        "port": 0, "workers": 2, "max_body_bytes": 1024, "access_log_dir": spool.to_str().unwrap(),
        "access_log_fsync": false,
    }))
    .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();

    // Before any snapshot: 503 service.starting with Retry-After.
    let starting = exchange(
        address,
        &signed("GET", "/api/v1/open", "", "", "nonce-starting-0001", &[]),
    );
    assert_eq!(starting.status, 503);
    assert_eq!(starting.json()["code"], "service.starting");
    assert_eq!(starting.header("retry-after"), Some("1"));

    let version = engine
        .shared
        .load_snapshot(document(live, dead).to_string().as_bytes())
        .unwrap();
    assert_eq!(version, 7);
    let at = now() as f64;
    let level1 = token(&signing_key(), "k1", &claims(at, 1, &["3300000001"]));
    let bearer = format!("Bearer {level1}");

    // A signed call with a token: routed, scoped, dispatched, masked, traced.
    let ok = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000001",
            "b=2&a=x+y",
            "",
            "nonce-ok-000000001",
            &[
                ("Authorization", &bearer),
                ("X-GG-Account", "forged"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        ),
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(
        ok.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let seen = ok.json();
    assert_eq!(seen["name"], "董**", "masked below level 2");
    assert_eq!(seen["phone"], "13812345678", "no rule: untouched");
    assert_eq!(
        seen["query"], "a=x%2By&b=2",
        "the canonical query is forwarded"
    );
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-gg-account"], "acc-1",
        "the caller's own X-GG-Account never passes"
    );
    assert_eq!(headers["x-gg-channel"], "app");
    assert_eq!(headers["x-gg-level"], "1");
    assert_eq!(headers["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(headers["accept-encoding"], "identity");
    assert!(headers.get("authorization").is_none());
    assert!(
        headers["x-gg-internal"]
            .as_str()
            .unwrap()
            .starts_with("v1;svc;")
    );
    assert!(
        headers["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );

    // Replayed nonce; no signature; someone else's 户号; no token on a level-1 interface.
    let replay = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000001",
            "b=2&a=x+y",
            "",
            "nonce-ok-000000001",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(replay.json()["code"], "channel.replayed");
    let unsigned = exchange(
        address,
        b"GET /api/v1/customers/3300000001 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(unsigned.status, 401);
    assert_eq!(
        unsigned.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(unsigned.json()["code"], "channel.unknown");
    // Said as it is: not signed at all, rather than an unknown channel.
    let detail = unsigned.json()["detail"].as_str().unwrap_or("").to_owned();
    assert!(detail.starts_with("the request is not signed"), "{detail}");
    let other = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000002",
            "",
            "",
            "nonce-other-0000001",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(
        (other.status, other.json()["code"].as_str()),
        (403, Some("perm.not_bound"))
    );
    let anonymous = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000001",
            "",
            "",
            "nonce-anon-00000001",
            &[],
        ),
    );
    assert_eq!(anonymous.json()["code"], "auth.required");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    // A token issued before a binding: the refusal says to refresh it.
    let level0 = token(&signing_key(), "k1", &claims(at, 0, &["3300000001"]));
    let stale = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000001",
            "",
            "",
            "nonce-stale-0000001",
            &[("Authorization", &format!("Bearer {level0}"))],
        ),
    );
    assert_eq!(stale.json()["code"], "perm.level_required");
    assert_eq!(stale.json()["required_level"], 1);
    let detail = stale.json()["detail"].as_str().unwrap_or("").to_owned();
    assert!(detail.contains("issued at level 0") && detail.contains("refresh the token"));

    // Body scope: the 户号 in the JSON body; broken JSON is a 422.
    let pay = exchange(
        address,
        &signed(
            "POST",
            "/api/v1/payments",
            "",
            r#"{"customer_no":3300000001}"#,
            "nonce-pay-000000001",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(pay.status, 200, "{}", String::from_utf8_lossy(&pay.body));
    let broken = exchange(
        address,
        &signed(
            "POST",
            "/api/v1/payments",
            "",
            "{",
            "nonce-pay-000000002",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(
        (broken.status, broken.json()["code"].as_str()),
        (422, Some("request.invalid"))
    );

    // Rate limit: 2 per second, the third answers 429 with Retry-After.
    let limited: Vec<Answer> = (0..3)
        .map(|i| {
            exchange(
                address,
                &signed(
                    "GET",
                    "/api/v1/limited",
                    "",
                    "",
                    &format!("nonce-limit-00000{i}"),
                    &[],
                ),
            )
        })
        .collect();
    assert_eq!(
        limited.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200, 429]
    );
    assert_eq!(limited[2].json()["code"], "flow.rate_limited");
    assert_eq!(limited[2].header("retry-after"), Some("1"));

    // Unsigned on an open interface; 404 and 405.
    assert_eq!(
        exchange(
            address,
            b"GET /api/v1/open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    let missing = exchange(
        address,
        b"GET /api/v1/nothing HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let wrong = exchange(
        address,
        b"DELETE /api/v1/open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (wrong.status, wrong.json()["code"].as_str()),
        (405, Some("request.method_not_allowed"))
    );

    // An idempotent 5xx is retried once, then passed through.
    let before = calls.load(Ordering::SeqCst);
    let failed = exchange(
        address,
        &signed("GET", "/api/v1/x/fail", "", "", "nonce-fail-0000001", &[]),
    );
    assert_eq!(failed.status, 500);
    assert_eq!(
        calls.load(Ordering::SeqCst) - before,
        1,
        "the dead instance took the other attempt"
    );

    // Limits: body over max_body_bytes → 413; a head over 16 KiB → 431 (the gate's answer).
    let large = "x".repeat(2048);
    let too_large = exchange(
        address,
        &signed(
            "POST",
            "/api/v1/payments",
            "",
            &large,
            "nonce-large-000001",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(
        (too_large.status, too_large.json()["code"].as_str()),
        (413, Some("request.too_large"))
    );
    let huge = format!(
        "GET /api/v1/open HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    assert_eq!(exchange(address, huge.as_bytes()).status, 431);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        exchange(
            address,
            format!("GET /api/v1/open HTTP/1.1\r\nHost: gw\r\n{many}\r\n").as_bytes()
        )
        .status,
        431
    );
    let bad_length = exchange(address, b"POST /api/v1/open HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(bad_length.status, 400);

    // Probes and metrics.
    let health = exchange(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.json()["status"], "ok");
    let metrics = String::from_utf8(
        exchange(
            address,
            b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        )
        .body,
    )
    .unwrap();
    assert!(metrics.contains("gridgate_gateway_requests_total{channel=\"app\",interface=\"t.customer\",status=\"2xx\"} 1.0"), "{metrics}");
    assert!(metrics.contains(
        "gridgate_gateway_requests_total{channel=\"none\",interface=\"unmatched\",status=\"4xx\"}"
    ));

    // Revocation takes effect at once, for a token already in the cache.
    engine.shared.tokens.revoke("s1", at + 900.0);
    let revoked = exchange(
        address,
        &signed(
            "GET",
            "/api/v1/customers/3300000001",
            "",
            "",
            "nonce-revoked-00001",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(revoked.json()["detail"], "session revoked");

    engine.stop(Duration::from_secs(1));
    drop(engine); // the access-log writer flushes
    let records: Vec<Value> = std::fs::read_to_string(spool.join("00000000000000000000.seg"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = records
        .iter()
        .find(|r| r["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap();
    assert_eq!(first["interface"], "t.customer");
    assert_eq!(first["account"], "acc-1");
    assert_eq!(first["upstream"], "live");
    assert_eq!(first["status"], 200);
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "trace_id",
            "time",
            "channel",
            "interface",
            "account",
            "client_ip",
            "method",
            "status",
            "code",
            "latency_ms",
            "queue_wait_ms",
            "upstream",
            "bytes_in",
            "bytes_out"
        ]
    );
    let _ = std::fs::remove_dir_all(&spool);
}

fn metrics_text(address: SocketAddr) -> String {
    let answer = exchange(
        address,
        b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    String::from_utf8(answer.body).unwrap()
}

fn open_get(address: SocketAddr, path: &str, extra: &str) -> Answer {
    exchange(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
}

/// Wait (at most 10 s) until ``done`` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The document of [`document`] with ``t.canary`` (open, keyed by the path's 户号) and
/// ``instances`` for its service.
fn canary_document(canary: Value, instances: Value) -> Value {
    let mut doc = document(1, 1);
    let interfaces = doc["interfaces"].as_array_mut().unwrap();
    interfaces.push(json!({
        "code": "t.canary", "method": "GET", "path": "/api/v1/canary/{customer_no}",
        "enabled": true, "requires_client_auth": false, "min_level": 0, "idempotent": false,
        "timeout_ms": 2000, "target_service": "svc", "balancer": "round_robin",
        "version": "1", "canary": canary,
    }));
    doc["instances"] = json!({ "svc": instances });
    doc
}

#[test]
fn canary_routing_by_version_end_to_end() {
    let (stable, canary, third) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let ports = (
        upstream(stable.clone()),
        upstream(canary.clone()),
        upstream(third.clone()),
    );
    let instances = json!([
        {"instance_id": "stable", "host": "127.0.0.2", "port": ports.0, "version": null},
        {"instance_id": "canary", "host": "127.0.0.2", "port": ports.1, "version": "2"},
        {"instance_id": "third", "host": "127.0.0.2", "port": ports.2, "version": "3"},
    ]);
    let config: Config =
        serde_json::from_value(json!({"port": 0, "workers": 2, "health_check_interval_ms": 0}))
            .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();
    let load = |doc: Value| {
        engine
            .shared
            .load_snapshot(doc.to_string().as_bytes())
            .unwrap()
    };
    load(canary_document(
        json!({"version": "2", "percent": 10}),
        instances.clone(),
    ));

    // By the 户号: the hash decides, the same way every time.
    let mut on_canary = 0;
    for n in 0..60 {
        let customer = format!("33000{n:05}");
        let expected = if crate::canary::to_canary(10, Some(&customer)) {
            on_canary += 1;
            "2"
        } else {
            "1"
        };
        for _ in 0..2 {
            let answer = open_get(address, &format!("/api/v1/canary/{customer}"), "");
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            assert_eq!(answer.header("x-gg-version"), Some(expected), "{customer}");
        }
    }
    assert!(
        on_canary > 0 && on_canary < 30,
        "{on_canary} of 60 on a 10% canary"
    );
    assert_eq!(canary.load(Ordering::SeqCst), 2 * on_canary);
    assert_eq!(stable.load(Ordering::SeqCst), 2 * (60 - on_canary));
    assert_eq!(third.load(Ordering::SeqCst), 0, "version 3 gets no calls");

    // The header pins a version and is not forwarded; another value is ignored.
    let stable_customer = (0..)
        .map(|n| format!("34000{n:05}"))
        .find(|c| !crate::canary::to_canary(10, Some(c)))
        .unwrap();
    let pinned = open_get(
        address,
        &format!("/api/v1/canary/{stable_customer}"),
        "X-GG-Version: 2\r\n",
    );
    assert_eq!(pinned.header("x-gg-version"), Some("2"));
    assert!(pinned.json()["headers"].get("x-gg-version").is_none());
    let ignored = open_get(
        address,
        &format!("/api/v1/canary/{stable_customer}"),
        "X-GG-Version: 3\r\n",
    );
    assert_eq!(ignored.header("x-gg-version"), Some("1"));
    assert_eq!(third.load(Ordering::SeqCst), 0);
    let text = metrics_text(address);
    assert!(
        text.contains(&format!(
            "gridgate_gateway_canary_requests_total{{interface=\"t.canary\",version=\"2\"}} {}.0\n",
            2 * on_canary + 1
        )),
        "{text}"
    );

    // A canary that cannot be reached: the stable version answers (the call is retried).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    load(canary_document(
        json!({"version": "2", "percent": 100}),
        json!([
            {"instance_id": "stable", "host": "127.0.0.2", "port": ports.0},
            {"instance_id": "canary", "host": "127.0.0.1", "port": dead, "version": "2"},
        ]),
    ));
    let fallback = open_get(address, "/api/v1/canary/3300000001", "");
    assert_eq!(fallback.status, 200);
    assert_eq!(fallback.header("x-gg-version"), Some("1"));

    // Without a canary every version serves and no version is announced.
    load(canary_document(Value::Null, instances));
    let before = third.load(Ordering::SeqCst);
    for n in 0..3 {
        let answer = open_get(address, &format!("/api/v1/canary/330000000{n}"), "");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-gg-version"), None);
    }
    assert_eq!(third.load(Ordering::SeqCst) - before, 1);
    engine.stop(Duration::from_secs(1));
}

#[test]
fn an_instance_failing_its_health_checks_leaves_the_rotation_and_comes_back() {
    let (calls_a, calls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let health_a = Arc::new(AtomicU16::new(200));
    let health_b = Arc::new(AtomicU16::new(200));
    let port_a = upstream_with_health(calls_a.clone(), health_a.clone());
    let port_b = upstream_with_health(calls_b.clone(), health_b.clone());
    let config: Config = serde_json::from_value(json!({
        "port": 0, "workers": 2, "health_check_interval_ms": 50,
        "health_check_timeout_ms": 500, "health_check_unhealthy_threshold": 2,
        "health_check_healthy_threshold": 2,
    }))
    .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let mut doc = document(port_a, port_b);
    doc["instances"] = json!({"svc": [
        {"instance_id": "a", "host": "127.0.0.2", "port": port_a},
        {"instance_id": "b", "host": "127.0.0.2", "port": port_b, "health_path": "healthz"},
    ]});
    engine
        .shared
        .load_snapshot(doc.to_string().as_bytes())
        .unwrap();
    assert_eq!(engine.shared.health.probed(), 0, "no runtime yet");
    let address = engine.start().unwrap();
    assert_eq!(engine.shared.health.probed(), 2);
    let spread = || {
        let (a, b) = (
            calls_a.load(Ordering::SeqCst),
            calls_b.load(Ordering::SeqCst),
        );
        for _ in 0..6 {
            assert_eq!(open_get(address, "/api/v1/open", "").status, 200);
        }
        (
            calls_a.load(Ordering::SeqCst) - a,
            calls_b.load(Ordering::SeqCst) - b,
        )
    };
    let gauge = |instance: &str, value: &str| {
        metrics_text(address).contains(&format!(
            "gridgate_gateway_instance_healthy{{service=\"svc\",instance=\"{instance}\"}} {value}\n"
        ))
    };
    assert!(gauge("a", "1.0") && gauge("b", "1.0"));
    assert_eq!(spread(), (3, 3));

    // a starts failing: out after two failed probes, b takes every call.
    health_a.store(503, Ordering::SeqCst);
    eventually("a is out", || gauge("a", "0.0"));
    assert_eq!(spread(), (0, 6));
    let text = metrics_text(address);
    let failures: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "gridgate_gateway_health_check_failures_total{service=\"svc\",instance=\"a\"} ",
            )
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2.0, "{text}");

    // Both out: every instance serves rather than none (panic mode).
    health_b.store(500, Ordering::SeqCst);
    eventually("b is out", || gauge("b", "0.0"));
    assert_eq!(spread(), (3, 3));

    // a recovers: back after two good probes, and alone in rotation while b is out.
    health_a.store(200, Ordering::SeqCst);
    eventually("a is back", || gauge("a", "1.0"));
    assert_eq!(spread(), (6, 0));
    health_b.store(200, Ordering::SeqCst);
    eventually("b is back", || gauge("b", "1.0"));
    assert_eq!(spread(), (3, 3));

    // An instance leaves the registry: its probe stops.
    doc["instances"] = json!({"svc": [{"instance_id": "b", "host": "127.0.0.2", "port": port_b}]});
    engine
        .shared
        .load_snapshot(doc.to_string().as_bytes())
        .unwrap();
    assert_eq!(engine.shared.health.probed(), 1);
    assert!(!metrics_text(address).contains("instance=\"a\""));
    engine.stop(Duration::from_secs(1));
    assert_eq!(engine.shared.health.probed(), 0);
}

#[test]
fn a_business_system_calls_what_it_is_granted_in_its_own_name() {
    const BILLING: (&str, &str, &str) = ("X-GG-System", "billing", "billing-password-0001");
    let live = upstream(Arc::new(AtomicUsize::new(0)));
    let spool = std::env::temp_dir().join(format!("gg-e2e-system-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let config: Config = serde_json::from_value(json!({
        "port": 0, "workers": 2, "access_log_dir": spool.to_str().unwrap(),
        "access_log_fsync": false, "health_check_interval_ms": 0,
    }))
    .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();
    let mut doc = document(live, live);
    doc["instances"] = json!({"svc": [
        {"instance_id": "live", "host": "127.0.0.2", "port": live, "weight": 100, "healthy": true},
    ]});
    doc["systems"] = json!([
        {"code": "billing", "secret": BILLING.2},
        {"code": "payment", "secret": "payment-password-01"},
    ]);
    // t.customer asks for level 1 and the path's 户号 bound to the caller's account; a system
    // call has neither and is let through on its grant alone.
    doc["interfaces"][0]["systems"] = json!(["billing"]);
    engine
        .shared
        .load_snapshot(doc.to_string().as_bytes())
        .unwrap();
    let path = "/api/v1/customers/3300000001";
    let call = |signer, nonce: &str, extra: &[(&str, &str)]| {
        exchange(
            address,
            &signed_as(signer, "GET", path, "b=2&a=1", "", nonce, extra),
        )
    };

    let ok = call(
        BILLING,
        "nonce-system-000001",
        &[("X-GG-Channel-Forged", "x"), ("X-GG-Account", "forged")],
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let seen = ok.json();
    let headers = &seen["headers"];
    assert_eq!(headers["x-gg-system"], "billing");
    assert!(headers.get("x-gg-channel").is_none());
    assert!(
        headers.get("x-gg-account").is_none(),
        "no customer, none forged"
    );
    assert!(headers.get("x-gg-level").is_none());
    assert!(
        headers["x-gg-internal"]
            .as_str()
            .unwrap()
            .starts_with("v1;svc;")
    );
    assert_eq!(
        seen["query"], "a=1&b=2",
        "the canonical query, as for a channel"
    );
    // Field rules still apply, at level 0: a system gets no more than an anonymous caller.
    assert_eq!(seen["name"], "董**");

    // The same nonce again: replayed. The same nonce from the channel: its own, accepted
    // as far as the nonce goes (then refused for want of a token).
    let replay = call(BILLING, "nonce-system-000001", &[]);
    assert_eq!(
        (replay.status, replay.json()["code"].as_str()),
        (401, Some("channel.replayed"))
    );
    let channel = call(("X-GG-Channel", "app", SECRET), "nonce-system-000001", &[]);
    assert_eq!(channel.json()["code"], "auth.required");

    // Not granted; a wrong password; unknown; both headers at once.
    let payment = call(
        ("X-GG-System", "payment", "payment-password-01"),
        "nonce-system-000002",
        &[],
    );
    assert_eq!(
        (payment.status, payment.json()["code"].as_str()),
        (403, Some("perm.denied"))
    );
    let wrong = call(
        ("X-GG-System", "billing", "not-the-password"),
        "nonce-system-000003",
        &[],
    );
    assert_eq!(
        (wrong.status, wrong.json()["code"].as_str()),
        (401, Some("channel.bad_signature"))
    );
    let unknown = call(("X-GG-System", "nobody", "x"), "nonce-system-000004", &[]);
    assert_eq!(
        unknown.json()["detail"],
        "unknown business system (X-GG-System)"
    );
    let both = call(BILLING, "nonce-system-000005", &[("X-GG-Channel", "app")]);
    assert_eq!(
        (both.status, both.json()["code"].as_str()),
        (401, Some("channel.unknown"))
    );
    // A system may not pose as a channel with its password, nor a channel as a system.
    let posing = call(
        ("X-GG-Channel", "billing", BILLING.2),
        "nonce-system-000006",
        &[],
    );
    assert_eq!(posing.json()["code"], "channel.unknown");
    let as_system = call(("X-GG-System", "app", SECRET), "nonce-system-000007", &[]);
    assert_eq!(as_system.json()["code"], "channel.unknown");

    let metrics = metrics_text(address);
    assert!(
        metrics.contains("gridgate_gateway_requests_total{channel=\"system:billing\",interface=\"t.customer\",status=\"2xx\"} 1.0"),
        "{metrics}"
    );
    engine.stop(Duration::from_secs(1));
    drop(engine); // the access-log writer flushes
    let records: Vec<Value> = std::fs::read_to_string(spool.join("00000000000000000000.seg"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let served: Vec<&Value> = records.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0]["channel"], "system:billing");
    assert_eq!(served[0]["account"], Value::Null);
    let _ = std::fs::remove_dir_all(&spool);
}
