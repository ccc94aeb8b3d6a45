//! The HTTP/1.1 front over real sockets: smuggling refusals, limits, deadlines, connection
//! caps and the drain (web/http1.py and web/connections.py behaviour).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::engine::{Config, Engine};

fn start(overrides: Value) -> (Engine, SocketAddr) {
    let mut config = json!({"port": 0, "workers": 2, "max_body_bytes": 1024});
    config
        .as_object_mut()
        .unwrap()
        .extend(overrides.as_object().unwrap().clone());
    let config: Config = serde_json::from_value(config).unwrap();
    let mut engine = Engine::new(config).unwrap();
    let address = engine.start().unwrap();
    (engine, address)
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Client {
    fn connect(address: SocketAddr) -> Self {
        Self::wrap(TcpStream::connect(address).unwrap())
    }

    /// A client from another local address (127.0.0.2, 127.0.0.3 …).
    fn connect_from(source: &str, address: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let stream = socket.connect(address).await.unwrap();
            stream.into_std().unwrap()
        });
        stream.set_nonblocking(false).unwrap();
        Self::wrap(stream)
    }

    fn wrap(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, data: &[u8]) -> &mut Self {
        self.stream.write_all(data).unwrap();
        self
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65_536];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(error) if error.kind() == ErrorKind::ConnectionReset => 0,
            Err(error) => panic!("read: {error}"),
        }
    }

    /// The next answer on the connection.
    fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(
                self.fill() > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        while self.buf.len() < end + 4 + length {
            assert!(self.fill() > 0, "closed inside a body");
        }
        let body = self.buf[end + 4..end + 4 + length].to_vec();
        self.buf.drain(..end + 4 + length);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The server closes the connection before ``deadline`` (no answer comes first).
    fn closed_by(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return true,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false, // timed out
            }
        }
    }

    /// The server closed the connection (nothing more than what was read comes).
    fn closed(&mut self) -> bool {
        let before = self.buf.len();
        let closed = self.fill() == 0;
        closed && self.buf.len() == before
    }
}

fn metrics(address: SocketAddr) -> String {
    let mut client = Client::connect(address);
    client.send(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    String::from_utf8(client.answer().body).unwrap()
}

fn assert_malformed(answer: &Answer) {
    assert_eq!(answer.status, 400, "{answer:?}");
    let problem = answer.problem();
    assert_eq!(problem["code"], "request.malformed");
    assert_eq!(problem["title"], "Malformed request");
    assert_eq!(problem["detail"], "the request is not valid HTTP/1.1");
    assert_eq!(problem["type"], "urn:gridgate:error:request.malformed");
    assert_eq!(answer.header("x-trace-id"), problem["trace_id"].as_str());
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn smuggling_shapes_get_400_problem_json_and_close() {
    let (mut engine, address) = start(json!({}));
    let shapes: [&[u8]; 12] = [
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 1, 1\r\n\r\na",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /a HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Folded: a\r\n\tb\r\n\r\n",
    ];
    for shape in shapes {
        let mut client = Client::connect(address);
        client.send(shape);
        let answer = client.answer();
        assert_malformed(&answer);
        assert!(client.closed(), "{}", String::from_utf8_lossy(shape));
    }
    // Not HTTP at all, a bare LF, a bad target: the same answer (hyper's would be empty),
    // at once even when the head has not ended.
    for other in [
        &b"GARBAGE\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /healthz HTTP/1.1\nHost: gw\n\n",
        b"GET /\xe6\x88\xb7 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let mut client = Client::connect(address);
        assert_malformed(&client.send(other).answer());
    }
    engine.stop(Duration::from_secs(1));
}

#[test]
fn a_bad_request_after_good_ones_is_answered_in_turn() {
    let (mut engine, address) = start(json!({}));
    let mut client = Client::connect(address);
    client.send(
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\nPOST /healthz HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /readyz HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    );
    let first = client.answer();
    assert_eq!((first.status, first.header("connection")), (200, None));
    let second = client.answer();
    assert_eq!(second.status, 405, "the probe refuses POST: {second:?}");
    assert_malformed(&client.answer());
    assert!(client.closed());
    engine.stop(Duration::from_secs(1));
}

#[test]
fn heads_over_16_kib_or_100_headers_get_431() {
    let (mut engine, address) = start(json!({}));
    let check = |client: &mut Client| {
        let answer = client.answer();
        assert_eq!(answer.status, 431);
        let problem = answer.problem();
        assert_eq!(problem["code"], "request.headers_too_large");
        assert_eq!(
            problem["detail"],
            "the request line and headers are too large"
        );
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(client.closed());
    };
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "y".repeat(17_000)
    );
    check(Client::connect(address).send(big.as_bytes()));
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    check(Client::connect(address).send(format!("GET /healthz HTTP/1.1\r\n{many}\r\n").as_bytes()));
    // A header line that never ends: refused once 16 KiB arrived, not at the deadline.
    let mut client = Client::connect(address);
    client.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Long: ");
    for _ in 0..40 {
        client.send(&[b'a'; 500]);
    }
    check(&mut client);
    // 100 headers are fine.
    let hundred: String = (0..98).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut client = Client::connect(address);
    client.send(
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\n{hundred}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(client.answer().status, 200);
    engine.stop(Duration::from_secs(1));
}

#[test]
fn a_slow_head_gets_408_and_a_silent_connection_is_closed() {
    let (mut engine, address) = start(json!({
        "request_head_timeout_s": 0.4, "connection_first_byte_timeout_s": 0.4,
    }));
    let began = Instant::now();
    let mut slow = Client::connect(address);
    slow.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n");
    let answer = slow.answer();
    assert!(began.elapsed() >= Duration::from_millis(400));
    assert_eq!(answer.status, 408);
    let problem = answer.problem();
    assert_eq!(problem["code"], "request.timeout");
    assert_eq!(problem["detail"], "the request head did not arrive in time");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(slow.closed());

    let began = Instant::now();
    let mut silent = Client::connect(address);
    assert!(silent.closed(), "closed without an answer");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // A kept-alive connection is not held to the first-byte deadline, a new one is.
    let mut kept = Client::connect(address);
    kept.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(kept.answer().status, 200);
    std::thread::sleep(Duration::from_millis(700));
    kept.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(kept.answer().status, 200);

    let text = metrics(address);
    assert!(
        text.contains(
            "gridgate_connections_timed_out_total{listener=\"gateway\",reason=\"head\"} 1.0\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "gridgate_connections_timed_out_total{listener=\"gateway\",reason=\"first_byte\"} 1.0\n"
        ),
        "{text}"
    );
    engine.stop(Duration::from_secs(1));
}

#[test]
fn a_body_over_the_max_gets_413_that_the_client_can_read() {
    let (mut engine, address) = start(json!({"max_body_bytes": 1024}));
    // Declared too large: answered at once, while the client keeps sending its body.
    let mut client = Client::connect(address);
    client.send(b"POST /api/v1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n");
    let mut writer = client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = [b'z'; 8192];
        let mut sent = 0;
        while sent < 1_000_000 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let answer = client.answer();
    assert_eq!(answer.status, 413);
    let problem = answer.problem();
    assert_eq!(problem["code"], "request.too_large");
    assert_eq!(problem["detail"], "the body must be at most 1024 bytes");
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(
        sender.join().unwrap(),
        1_000_000 + 8192 - 1_000_000 % 8192,
        "the lingering close read it all"
    );
    assert!(client.closed());

    // Chunked, over the max only once read.
    let mut client = Client::connect(address);
    client.send(b"POST /api/v1/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..4 {
        client.send(b"200\r\n");
        client.send(&[b'q'; 512]);
        client.send(b"\r\n");
    }
    let answer = client.answer();
    assert_eq!(
        (answer.status, answer.problem()["code"].as_str()),
        (413, Some("request.too_large"))
    );
    client.send(b"0\r\n\r\n");
    assert!(client.closed());
    engine.stop(Duration::from_secs(1));
}

#[test]
fn connections_over_the_cap_get_503_and_are_closed() {
    let (mut engine, address) = start(json!({"max_connections": 2}));
    let first = Client::connect(address);
    let mut second = Client::connect(address);
    std::thread::sleep(Duration::from_millis(100));
    let mut third = Client::connect(address);
    let mut raw = Vec::new();
    third.stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: 173\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"type\":\"urn:gridgate:error:flow.overloaded\",\"title\":\"Overloaded\",\"status\":503,\"detail\":\"too many open connections\",\"code\":\"flow.overloaded\",\"trace_id\":null,\"retry_after\":1}"
    );
    // The two admitted ones still serve; once one closes, a new one is admitted.
    second.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(second.answer().status, 200);
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let text = metrics(address);
    assert!(text.contains("gridgate_connections_refused_total{listener=\"gateway\",reason=\"listener_full\"} 1.0\n"), "{text}");
    assert!(
        text.contains("gridgate_connections_open{listener=\"gateway\"} 2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("gridgate_connections_max{listener=\"gateway\"} 2.0\n"),
        "{text}"
    );
    engine.stop(Duration::from_secs(1));
}

#[test]
fn the_per_address_cap_counts_each_client_address_and_spares_trusted_proxies() {
    let (mut engine, address) = start(json!({
        "max_connections_per_address": 2, "trusted_proxies": ["127.0.0.0/31"],
    }));
    let _a = Client::connect_from("127.0.0.2", address);
    let _b = Client::connect_from("127.0.0.2", address);
    std::thread::sleep(Duration::from_millis(100));
    let mut refused = Client::connect_from("127.0.0.2", address);
    let answer = refused.answer();
    assert_eq!(
        (answer.status, answer.problem()["code"].as_str()),
        (503, Some("flow.overloaded"))
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(refused.closed());
    // Another address has its own tally; a trusted proxy has none.
    let mut other = Client::connect_from("127.0.0.3", address);
    other.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(other.answer().status, 200);
    let proxies: Vec<Client> = (0..3).map(|_| Client::connect(address)).collect();
    for mut proxy in proxies {
        proxy.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!(proxy.answer().status, 200);
    }
    let text = metrics(address);
    assert!(
        text.contains(
            "gridgate_connections_refused_total{listener=\"gateway\",reason=\"address_full\"} 1.0\n"
        ),
        "{text}"
    );
    engine.stop(Duration::from_secs(1));
}

#[test]
fn keep_alive_is_cut_short_under_pressure() {
    // Pressure above 3 of 4 connections.
    let (mut engine, address) = start(json!({
        "max_connections": 4, "keep_alive_s": 30, "keep_alive_under_pressure_s": 0.3,
        "connection_first_byte_timeout_s": 30,
    }));
    let mut idle = Client::connect(address);
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(idle.answer().status, 200);
    std::thread::sleep(Duration::from_millis(600));
    // No pressure: still open after longer than the short keep-alive.
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(idle.answer().status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let began = Instant::now();
    let _others: Vec<Client> = (0..3).map(|_| Client::connect(address)).collect();
    assert!(idle.closed());
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    std::thread::sleep(Duration::from_millis(100));
    let text = metrics(address);
    assert!(text.contains("gridgate_connections_timed_out_total{listener=\"gateway\",reason=\"idle_under_pressure\"} 1.0\n"), "{text}");
    engine.stop(Duration::from_secs(1));
}

#[test]
fn every_idle_keep_alive_is_cut_short_under_pressure() {
    // 14 of 16 is above 3/4 of the cap. Closing idle connections relieves the pressure
    // after two of them; the others, idle while it lasted, must close all the same (as
    // web/http1.py's sweep closes them), not wait for the 30 s keep-alive.
    let short = Duration::from_millis(500);
    let (mut engine, address) = start(json!({
        "max_connections": 16, "keep_alive_s": 30, "keep_alive_under_pressure_s": 0.5,
        "connection_first_byte_timeout_s": 30,
    }));
    let mut idle: Vec<Client> = (0..14)
        .map(|n| {
            let mut client = Client::connect_from(&format!("127.0.0.{}", 10 + n), address);
            client.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
            assert_eq!(client.answer().status, 200);
            client
        })
        .collect();
    // Every one is idle, and the listener under pressure, from here at the latest.
    let deadline = Instant::now() + 2 * short;
    for (n, client) in idle.iter_mut().enumerate() {
        assert!(
            client.closed_by(deadline),
            "idle connection {n} still open {:?} after the last answer",
            2 * short
        );
    }
    let text = metrics(address);
    assert!(text.contains("gridgate_connections_timed_out_total{listener=\"gateway\",reason=\"idle_under_pressure\"} 14.0\n"), "{text}");
    engine.stop(Duration::from_secs(1));
}

#[test]
fn a_stop_lets_an_in_flight_request_finish_and_closes_idle_connections() {
    let (mut engine, address) = start(json!({}));
    let mut idle = Client::connect(address);
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(idle.answer().status, 200);
    // In flight: the service waits for the rest of the body.
    let mut busy = Client::connect(address);
    busy.send(b"POST /api/v1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n01234");
    std::thread::sleep(Duration::from_millis(200));
    let began = Instant::now();
    let stopper = std::thread::spawn(move || {
        engine.stop(Duration::from_secs(5));
        began.elapsed()
    });
    assert!(idle.closed(), "an idle keep-alive closes at once");
    assert!(began.elapsed() < Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(address).is_err(), "no longer accepting");
    busy.send(b"56789");
    let answer = busy.answer();
    // No snapshot yet: the pipeline's answer, with the connection closed after it.
    assert_eq!(answer.problem()["code"], "service.starting");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(busy.closed());
    let stopped = stopper.join().unwrap();
    assert!(
        stopped < Duration::from_secs(3),
        "the drain ends with the last connection: {stopped:?}"
    );
}

#[test]
fn heads_in_pieces_pipelining_and_100_continue_are_served() {
    let (mut engine, address) = start(json!({}));
    let mut client = Client::connect(address);
    // A head in three pieces, then two requests and the start of a third in one write.
    for piece in [&b"GET /hea"[..], b"lthz HTTP/1.1\r\nHo", b"st: gw\r\n\r\n"] {
        client.send(piece);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.answer().status, 200);
    client.send(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\nGET /heal");
    assert_eq!(client.answer().status, 200);
    assert_eq!(client.answer().status, 503, "no snapshot yet");
    std::thread::sleep(Duration::from_millis(50));
    client.send(b"thz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(client.answer().status, 200);
    assert!(client.closed());
    // Expect: 100-continue: the body is sent once asked for.
    let mut client = Client::connect(address);
    client.send(
        b"POST /api/v1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = client.answer();
    assert_eq!(interim.status, 100);
    client.send(b"abc");
    assert_eq!(client.answer().problem()["code"], "service.starting");
    engine.stop(Duration::from_secs(1));
}

#[test]
fn a_broken_chunked_body_gets_400() {
    let (mut engine, address) = start(json!({}));
    let mut client = Client::connect(address);
    client.send(
        b"POST /api/v1/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",
    );
    assert_malformed(&client.answer());
    assert!(client.closed());
    engine.stop(Duration::from_secs(1));
}

#[test]
fn the_connection_settings_default_to_settings_py() {
    // The document gateway/engine.py EngineConfig.to_json writes today, without the new keys.
    let config: Config = serde_json::from_value(json!({
        "host": "127.0.0.1", "port": 0, "workers": null, "max_body_bytes": 6_291_456,
        "trusted_proxies": ["127.0.0.1", "::1"], "max_nonces": 1_000_000,
        "token_issuer": "gridgate-accounts", "token_audience": "gridgate",
        "token_max_lifetime_s": 960.0, "client_rate_limit_per_s": null,
        "account_rate_limit_per_s": null, "max_concurrency": 2000, "max_queue": 2000,
        "max_wait_ms": 0, "access_log_dir": null, "access_log_fsync": true,
    }))
    .unwrap();
    assert_eq!(config.max_connections, 16_384);
    assert_eq!(config.max_connections_per_address, 256);
    assert_eq!(config.connection_first_byte_timeout_s, 10.0);
    assert_eq!(config.request_head_timeout_s, 10.0);
    assert_eq!(config.keep_alive_under_pressure_s, 5.0);
    assert_eq!(config.keep_alive_s, 65.0);
    let policy = config.connection_policy();
    assert_eq!(
        policy.exempt,
        crate::connections::TrustedProxies::parse(&["127.0.0.1", "::1"]).unwrap()
    );
    assert_eq!(policy.first_byte, Duration::from_secs(10));
    let health = config.health_checks();
    assert_eq!(
        (health.interval, health.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!(
        (health.unhealthy_threshold, health.healthy_threshold),
        (2, 2)
    );
}
