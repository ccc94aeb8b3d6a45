//! The engine's own instructions per request, repeatably (engine/README.md "Performance").
//!
//! ```sh
//! cargo build --release --example perf
//! target/release/examples/perf 500 1500      # valgrind --tool=callgrind on the engine only
//! ```
//!
//! The engine runs in a child process (this program with `serve`) under
//! `valgrind --tool=callgrind`, with the bench's pipeline (`gridgate bench engine`): a signed
//! request with a fresh nonce, a level-1 EdDSA token holding 50 customers (the verified-token
//! cache hit), the 户号 scope from the path, a rate limit counted on every call, the access
//! record appended to a spool, and one `mask:name` field rule on the upstream's 1 KiB JSON
//! answer. The client and the upstream run in this process, outside valgrind, over real
//! sockets (one keep-alive connection each way). For each N the engine serves 200 warm-up
//! calls and then N; one request is the difference of the totals over the difference of the
//! Ns, so start-up and shutdown cancel out. The dumps stay in the temp dir
//! (`gg-perf-callgrind.N`) for `callgrind_annotate --inclusive=yes`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use _engine::signing::sign;
use _engine::{Config, Engine};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const SECRET: &str = "bench-channel-secret-for-the-perf-harness";
const INTERNAL_KEY: &str = "9302532a9a476a495b15323c0158e99bd9c59b24cb3b658089356946aecee76a";
const CUSTOMERS: usize = 50;
const WARM_UP: usize = 200;
const BODY_BYTES: usize = 1024;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn customer(index: usize) -> String {
    format!("C{:07}", index % CUSTOMERS)
}

/// The bench's 1 KiB answer (bench/gateway.py `backend_body`).
fn backend_body() -> String {
    let accounts: Vec<Value> = (0..6)
        .map(|i| json!({"account_no": format!("62220000{i:08}"), "type": "savings", "balance": 1234.56 + f64::from(i)}))
        .collect();
    let mut document = json!({"customer_no": "C0000001", "name": "Benchmark Customer", "level": 1,
        "accounts": accounts, "note": ""});
    let bare = document.to_string().len();
    document["note"] = json!("x".repeat(BODY_BYTES - bare));
    let text = document.to_string();
    assert_eq!(text.len(), BODY_BYTES);
    text
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn token(key: &SigningKey) -> String {
    let at = now();
    let claims = json!({"iss": "gridgate-accounts", "aud": "gridgate", "sub": "bench-account",
        "lvl": 1, "ch": "bench", "sid": "bench-session", "iat": at, "exp": at + 900,
        "cns": (0..CUSTOMERS).map(customer).collect::<Vec<_>>()});
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"bench-1"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
    format!("{signed}.{signature}")
}

fn document(upstream: u16) -> Value {
    let key = signing_key();
    json!({
        "version": 1, "revision": 1,
        "channels": [{"code": "bench", "secret": SECRET, "enabled": true, "allowed_ips": [],
            "rate_limit_per_s": null}],
        "interfaces": [{"code": "bench.customer", "method": "GET",
            "path": "/api/v1/bench/{customer_no}", "enabled": true, "requires_client_auth": true,
            "min_level": 1, "customer_scope": "path:customer_no", "idempotent": true,
            "timeout_ms": 5000, "target_service": "bench-backend", "balancer": "round_robin",
            "channels": ["bench"], "max_queue": 0, "max_wait_ms": 0,
            "rate_limit_per_s": 1_000_000}],
        "field_rules": [{"interface": "bench.customer", "channel": null, "path": "name",
            "action": "mask:name", "below_level": 2}],
        "instances": {"bench-backend": [{"instance_id": "bench-1", "host": "127.0.0.1",
            "port": upstream, "weight": 100, "healthy": true}]},
        "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "bench-1", "use": "sig",
            "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())}]},
        "internal_keys": {"bench-backend": INTERNAL_KEY},
    })
}

/// Read one HTTP/1.1 message head and its ``content-length`` body; None at EOF.
fn read_message(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The business system: every call answered with the 1 KiB JSON document, keep-alive.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = backend_body();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                while read_message(&mut reader).is_some() {
                    if writer.write_all(&answer).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn calls(token: &str, count: usize) -> Vec<Vec<u8>> {
    let ts = now().to_string();
    (0..count)
        .map(|index| {
            let path = format!("/api/v1/bench/{}", customer(index));
            let nonce = format!("{:024x}", fastrand::u128(..));
            let signature = sign(
                SECRET.as_bytes(),
                "GET",
                path.as_bytes(),
                b"",
                &ts,
                nonce.as_bytes(),
                b"",
            );
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GG-Channel: bench\r\nX-GG-Timestamp: {ts}\r\nX-GG-Nonce: {nonce}\r\nX-GG-Signature: {signature}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .into_bytes()
        })
        .collect()
}

/// The engine's side: serve until stdin closes.
fn serve(upstream_port: u16) {
    let spool = std::env::temp_dir().join(format!("gg-perf-spool-{}", std::process::id()));
    let config: Config = serde_json::from_value(json!({
        "host": "127.0.0.1", "port": 0, "workers": 1, "access_log_dir": spool.to_str().unwrap(),
        "access_log_fsync": false, "health_check_interval_ms": 0,
    }))
    .unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();
    engine
        .shared
        .load_snapshot(document(upstream_port).to_string().as_bytes())
        .unwrap();
    println!("{address}");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    engine.stop(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(spool);
}

/// Run ``count`` calls (after the warm-up) against an engine under callgrind: its total Ir.
fn measure(count: usize, valgrind: bool) -> u64 {
    let upstream_port = upstream();
    let this = std::env::current_exe().unwrap();
    let out = std::env::temp_dir().join(format!("gg-perf-callgrind.{count}"));
    let mut command = if valgrind {
        let mut command = Command::new("valgrind");
        command.args([
            "--tool=callgrind",
            &format!("--callgrind-out-file={}", out.display()),
        ]);
        command.arg(&this);
        command
    } else {
        Command::new(&this)
    };
    let mut child = command
        .args(["serve", &upstream_port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("valgrind (apt-get install valgrind)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address: SocketAddr = line.trim().parse().expect("the engine's address");
    let key = signing_key();
    let requests = calls(&token(&key), WARM_UP + count);
    let stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let expected = backend_body().replace("Benchmark Customer", "B*****************");
    for (index, request) in requests.iter().enumerate() {
        writer.write_all(request).unwrap();
        let (head, body) = read_message(&mut reader).expect("an answer");
        if index == 0 {
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "{head}{}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(String::from_utf8_lossy(&body), expected);
        }
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !valgrind {
        return 0;
    }
    stderr
        .lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no callgrind total: {stderr}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        serve(args[1].parse().unwrap());
        return;
    }
    if args.first().map(String::as_str) == Some("native") {
        measure(args.get(1).map_or(1000, |n| n.parse().unwrap()), false);
        return;
    }
    let small: usize = args.first().map_or(500, |n| n.parse().unwrap());
    let large: usize = args.get(1).map_or(1500, |n| n.parse().unwrap());
    let (a, b) = (measure(small, true), measure(large, true));
    println!(
        "{small} calls: {a} Ir; {large} calls: {b} Ir; per request: {:.1}k",
        (b - a) as f64 / (large - small) as f64 / 1000.0
    );
}
