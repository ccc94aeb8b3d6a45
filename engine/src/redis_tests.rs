//! Redis mode end to end: a real ``redis-server`` (started here, on a free port, no
//! persistence) shared by two engines. Skipped, with a message, when the binary is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e_tests::{Answer, document, exchange, now, signed, signed_as, upstream};
use crate::engine::{Config, Engine};
use crate::user_auth::tests::{claims, signing_key, token};

/// An entry of ``XRANGE``: its id and its (field, value) pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn redis_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|path| path.is_file())
    })
}

impl RedisServer {
    /// A server on a free port, or None (with a message) when redis-server is not installed.
    fn start(name: &str) -> Option<Self> {
        let Some(_) = redis_binary() else {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("gg-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.run();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut connection) = self.connection()
                && redis::cmd("PING").query::<String>(&mut connection).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An engine in Redis mode in front of the test upstream, with ``document`` loaded.
fn engine(redis: &RedisServer, document: &Value) -> (Engine, SocketAddr) {
    let config: Config = serde_json::from_value(json!({
        "port": 0, "workers": 2, "redis_url": redis.url(), "redis_timeout_ms": 500,
        "client_rate_limit_per_s": 1000,
    }))
    .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();
    engine
        .shared
        .load_snapshot(document.to_string().as_bytes())
        .unwrap();
    (engine, address)
}

fn catalog(channel_rate: u32, interface_rate: u32) -> Value {
    let calls = Arc::new(AtomicUsize::new(0));
    let live = upstream(calls);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut document = document(live, dead);
    document["channels"][0]["rate_limit_per_s"] = json!(channel_rate);
    for interface in document["interfaces"].as_array_mut().unwrap() {
        if interface["code"] == "t.limited" {
            interface["rate_limit_per_s"] = json!(interface_rate);
        }
    }
    document
}

fn get(address: SocketAddr, path: &str, nonce: &str, extra: &[(&str, &str)]) -> Answer {
    exchange(address, &signed("GET", path, "", "", nonce, extra))
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_engines_share_nonces_rate_windows_and_revocations() {
    let Some(redis) = RedisServer::start("share") else {
        return;
    };
    let document = catalog(1000, 4);
    let (_a, a) = engine(&redis, &document);
    let (_b, b) = engine(&redis, &document);
    let mut db = redis.connection().unwrap();

    // A nonce spent on engine A is refused on engine B; the key is Python's, kept 600 s.
    let first = get(a, "/api/v1/open", "nonce-shared-00000001", &[]);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let replay = get(b, "/api/v1/open", "nonce-shared-00000001", &[]);
    assert_eq!(replay.status, 401);
    assert_eq!(replay.json()["code"], "channel.replayed");
    let ttl: i64 = redis::cmd("TTL")
        .arg("gg:nonce:app:nonce-shared-00000001")
        .query(&mut db)
        .unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");

    // A request refused after channel auth (no token on a level-1 interface) still spends
    // its nonce: replayed on the other engine it is answered channel.replayed.
    let refused = get(
        a,
        "/api/v1/customers/3300000001",
        "nonce-shared-00000002",
        &[],
    );
    assert_eq!(refused.json()["code"], "auth.required");
    let replayed = get(
        b,
        "/api/v1/customers/3300000001",
        "nonce-shared-00000002",
        &[],
    );
    assert_eq!(replayed.json()["code"], "channel.replayed");

    // 4 per second on the interface, spread over both engines: 4 pass in all.
    let started = Instant::now();
    let answers: Vec<Answer> = (0..8)
        .map(|i| {
            let engine = if i % 2 == 0 { a } else { b };
            get(
                engine,
                "/api/v1/limited",
                &format!("nonce-rate-{i:010}"),
                &[],
            )
        })
        .collect();
    let elapsed = started.elapsed();
    let passed = answers.iter().filter(|a| a.status == 200).count();
    if elapsed < Duration::from_millis(900) {
        assert_eq!(
            passed,
            4,
            "{:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
    } else {
        assert!((4..=8).contains(&passed), "{passed} passed in {elapsed:?}");
    }
    let refused = answers.iter().find(|a| a.status == 429).expect("a 429");
    assert_eq!(refused.json()["code"], "flow.rate_limited");
    assert_eq!(refused.json()["detail"], "more than 4 requests in 1 s");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The windows are the `limits` library's lists under Python's keys.
    let counted: i64 = redis::cmd("LLEN")
        .arg("gg:rate:LIMITER/interface:t.limited/4/1/second")
        .query(&mut db)
        .unwrap();
    assert_eq!(counted, 4);
    let channel: i64 = redis::cmd("LLEN")
        .arg("gg:rate:LIMITER/channel:app/1000/1/second")
        .query(&mut db)
        .unwrap();
    assert!(channel >= 8, "channel window counted {channel}");
    let client: i64 = redis::cmd("EXISTS")
        .arg("gg:rate:LIMITER/client:t.limited:127.0.0.1/1000/1/second")
        .query(&mut db)
        .unwrap();
    assert_eq!(client, 1);

    // A logout published on Redis (tokens.py RedisRevocationFeed.publish) refuses the token
    // on both engines at once.
    let at = now() as f64;
    let bearer = format!(
        "Bearer {}",
        token(&signing_key(), "k1", &claims(at, 1, &["3300000001"]))
    );
    let auth = [("Authorization", bearer.as_str())];
    let path = "/api/v1/customers/3300000001";
    assert_eq!(get(a, path, "nonce-token-00000001", &auth).status, 200);
    assert_eq!(get(b, path, "nonce-token-00000002", &auth).status, 200);
    let until = at + 900.0;
    let _: () = redis::pipe()
        .atomic()
        .cmd("ZADD")
        .arg("gg:revoked:sessions")
        .arg("GT")
        .arg(until)
        .arg("s1")
        .ignore()
        .cmd("PUBLISH")
        .arg("gg:revoked:events")
        .arg(json!({"sid": "s1", "until": until}).to_string())
        .ignore()
        .query(&mut db)
        .unwrap();
    let mut n = 0;
    for engine in [a, b] {
        wait_until(
            "the revocation reaches the engine",
            Duration::from_secs(3),
            || {
                n += 1;
                let answer = get(engine, path, &format!("nonce-revoked-{n:08}"), &auth);
                answer.status == 401 && answer.json()["code"] == "auth.invalid_token"
            },
        );
    }
    // Only in the set (a message lost in a reconnection): the reload finds it within 1 s.
    let mut other = claims(at, 1, &["3300000001"]);
    other["sid"] = json!("s2");
    let bearer2 = format!("Bearer {}", token(&signing_key(), "k1", &other));
    let auth2 = [("Authorization", bearer2.as_str())];
    assert_eq!(get(b, path, "nonce-token-00000003", &auth2).status, 200);
    let _: () = redis::cmd("ZADD")
        .arg("gg:revoked:sessions")
        .arg(until)
        .arg("s2")
        .query(&mut db)
        .unwrap();
    for engine in [a, b] {
        wait_until(
            "the reload finds the revocation",
            Duration::from_secs(4),
            || {
                n += 1;
                get(engine, path, &format!("nonce-revoked-{n:08}"), &auth2).status == 401
            },
        );
    }
}

#[test]
fn access_records_reach_the_stream_with_the_python_schema() {
    let Some(redis) = RedisServer::start("stream") else {
        return;
    };
    let (engine_a, a) = engine(&redis, &catalog(1000, 1000));
    for i in 0..5 {
        assert_eq!(
            get(a, "/api/v1/open", &format!("nonce-log-{i:010}"), &[]).status,
            200
        );
    }
    let missing = get(a, "/api/v1/nowhere", "nonce-log-missing01", &[]);
    assert_eq!(missing.status, 404);
    engine_a.shared.access_log.flush(Duration::from_secs(5));
    let mut db = redis.connection().unwrap();
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("gg:logs")
        .arg("-")
        .arg("+")
        .query(&mut db)
        .unwrap();
    assert_eq!(entries.len(), 6);
    let (_, fields) = &entries[0];
    assert_eq!(fields.len(), 1);
    assert_eq!(
        fields[0].0, "r",
        "one field `r` per entry, as RedisStreamBuffer writes"
    );
    let record: serde_json::Map<String, Value> = serde_json::from_slice(&fields[0].1).unwrap();
    let keys: Vec<&str> = record.keys().map(String::as_str).collect();
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
    assert_eq!(record["interface"], "t.open");
    assert_eq!(record["channel"], "app");
    assert_eq!(record["status"], 200);
    let (_, last) = &entries[5];
    let last: Value = serde_json::from_slice(&last[0].1).unwrap();
    assert_eq!(last["code"], "not_found");
    assert_eq!(last["interface"], Value::Null);
    let counters = &engine_a.shared.access_log.counters;
    assert_eq!(
        counters.appended.load(std::sync::atomic::Ordering::Relaxed),
        6
    );
}

#[test]
fn redis_down_answers_503_and_recovers() {
    let Some(mut redis) = RedisServer::start("down") else {
        return;
    };
    let (engine_a, a) = engine(&redis, &catalog(1000, 1000));
    assert_eq!(
        get(a, "/api/v1/limited", "nonce-down-00000001", &[]).status,
        200
    );
    redis.kill();
    let down = get(a, "/api/v1/limited", "nonce-down-00000002", &[]);
    assert_eq!(down.status, 503, "{}", String::from_utf8_lossy(&down.body));
    assert_eq!(
        down.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(down.json()["code"], "service.unavailable");
    assert_eq!(down.header("retry-after"), Some("1"));
    // Requests that need no Redis are still served; refusals before the nonce too.
    assert_eq!(
        get(a, "/api/v1/nowhere", "nonce-down-00000003", &[]).status,
        404
    );
    redis.run();
    let mut n = 0;
    wait_until("the engine reconnects", Duration::from_secs(10), || {
        n += 1;
        get(a, "/api/v1/limited", &format!("nonce-back-{n:010}"), &[]).status == 200
    });
    // The records of the outage were kept and reach the (new, empty) stream.
    engine_a.shared.access_log.flush(Duration::from_secs(10));
    let mut db = redis.connection().unwrap();
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("gg:logs")
        .arg("-")
        .arg("+")
        .query(&mut db)
        .unwrap();
    let codes: Vec<Value> = entries
        .iter()
        .map(|(_, fields)| serde_json::from_slice::<Value>(&fields[0].1).unwrap()["code"].clone())
        .collect();
    assert!(codes.contains(&json!("service.unavailable")), "{codes:?}");
    assert!(codes.contains(&json!("not_found")), "{codes:?}");
    let dropped = engine_a
        .shared
        .access_log
        .counters
        .dropped_queue_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 0);
}

#[test]
fn concurrent_requests_pipeline_on_one_connection_and_the_limit_holds() {
    use crate::flow::RateHit;
    use crate::redis_store::RedisStore;
    let Some(redis) = RedisServer::start("pipeline") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(2), None).unwrap());
    let hits = vec![
        RateHit {
            key: "channel:app".into(),
            per_second: 1000,
        },
        RateHit {
            key: "interface:t.x".into(),
            per_second: 50,
        },
    ];
    let run = |offset: usize| {
        let store = store.clone();
        let hits = hits.clone();
        runtime.block_on(async move {
            let started = Instant::now();
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let store = store.clone();
                    let hits = hits.clone();
                    tokio::spawn(async move {
                        let nonce = format!("nonce-pipe-{:010}", i + offset);
                        store.admit(Some(("app", &nonce)), &hits).await
                    })
                })
                .collect();
            let mut passed = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(()) => passed += 1,
                    Err(crate::errors::GatewayError::RateLimited { retry_after, .. }) => {
                        assert_eq!(retry_after, 1)
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            (passed, started.elapsed())
        })
    };
    let (passed, elapsed) = run(0);
    if elapsed < Duration::from_millis(900) {
        assert_eq!(passed, 50, "the window holds under concurrency");
    }
    // One connection carried them all (pipelined), besides this test's own.
    let mut db = redis.connection().unwrap();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut db).unwrap();
    assert_eq!(clients.lines().count(), 2, "{clients}");
    // The script cache emptied (as after a restart): EVALSHA's NOSCRIPT loads it again.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut db).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (passed, _) = run(1000);
    assert!(passed >= 1, "served again after SCRIPT FLUSH");
    // Every nonce spent once: a replay of any is refused.
    let replay = runtime.block_on(store.run(Some(("app", "nonce-pipe-0000000007")), &[]));
    assert_eq!(replay.unwrap(), Err(crate::redis_store::Refusal::Replayed));
}

#[test]
fn state_written_by_a_python_node_is_honoured() {
    let Some(redis) = RedisServer::start("python") else {
        return;
    };
    let (_engine, a) = engine(&redis, &catalog(1000, 2));
    let mut db = redis.connection().unwrap();
    // nonces.py RedisNonceStore.first_use: SET gg:nonce:<channel>:<nonce> 1 NX EX 600.
    let _: () = redis::cmd("SET")
        .arg("gg:nonce:app:nonce-python-0000001")
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(600)
        .query(&mut db)
        .unwrap();
    let replay = get(a, "/api/v1/limited", "nonce-python-0000001", &[]);
    assert_eq!(replay.json()["code"], "channel.replayed");
    // limits' acquire_moving_window.lua from flow.py RateLimiter (key_prefix gg:rate):
    // LPUSH the node's time.time(), LTRIM to the limit, EXPIRE the window.
    let key = "gg:rate:LIMITER/interface:t.limited/2/1/second";
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut db).unwrap();
    let python_now = format!("{seconds}.{micros:06}");
    for _ in 0..2 {
        let _: () = redis::pipe()
            .cmd("LPUSH")
            .arg(key)
            .arg(&python_now)
            .ignore()
            .cmd("LTRIM")
            .arg(key)
            .arg(0)
            .arg(1)
            .ignore()
            .cmd("EXPIRE")
            .arg(key)
            .arg(1)
            .ignore()
            .query(&mut db)
            .unwrap();
    }
    let limited = get(a, "/api/v1/limited", "nonce-python-0000002", &[]);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    std::thread::sleep(Duration::from_millis(1100));
    let later = get(a, "/api/v1/limited", "nonce-python-0000003", &[]);
    assert_eq!(later.status, 200);
}

#[test]
fn a_business_systems_nonces_are_shared_apart_from_the_channels() {
    let Some(redis) = RedisServer::start("system") else {
        return;
    };
    let mut document = catalog(1000, 1000);
    document["systems"] = json!([{"code": "billing", "secret": "billing-password-0001"}]);
    for interface in document["interfaces"].as_array_mut().unwrap() {
        interface["systems"] = json!(["billing"]);
    }
    let (_a, a) = engine(&redis, &document);
    let (_b, b) = engine(&redis, &document);
    let mut db = redis.connection().unwrap();
    let billing = ("X-GG-System", "billing", "billing-password-0001");
    let call = |address, nonce| {
        exchange(
            address,
            &signed_as(billing, "GET", "/api/v1/open", "", "", nonce, &[]),
        )
    };

    assert_eq!(call(a, "nonce-system-shared-01").status, 200);
    assert_eq!(
        call(b, "nonce-system-shared-01").json()["code"],
        "channel.replayed"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("gg:nonce:system:billing:nonce-system-shared-01")
        .query(&mut db)
        .unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    // The channel's nonces are its own: the same nonce is fresh for it.
    assert_eq!(
        get(b, "/api/v1/open", "nonce-system-shared-01", &[]).status,
        200
    );
}
