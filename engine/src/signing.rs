//! Channel request signing: HMAC-SHA256 over the request (docs/api.md, gateway/signing.py).
//!
//! ```text
//! string_to_sign = METHOD "\n" PATH "\n" CANONICAL_QUERY "\n" TIMESTAMP "\n" NONCE "\n" hex(sha256(body))
//! signature      = base64( HMAC-SHA256( utf8(channel_secret), string_to_sign ) )
//! ```
//!
//! The canonical query is also what the gateway forwards in place of the query as sent, so
//! the business system reads exactly what was signed. tests/vectors/signing.json pins it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far (seconds) a request's timestamp may be from the gateway's clock, either way.
pub const WINDOW_S: u64 = 300;

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (``+`` stays a plus; a ``%`` without two hex digits is literal), then
/// re-encode every byte outside ``A-Za-z0-9-_.~`` as upper-case ``%XX``.
fn recode(part: &[u8], out: &mut String) {
    let mut index = 0;
    while index < part.len() {
        let mut byte = part[index];
        if byte == b'%'
            && index + 2 < part.len()
            && let (Some(high), Some(low)) =
                (hex_value(part[index + 1]), hex_value(part[index + 2]))
        {
            byte = high << 4 | low;
            index += 2;
        }
        index += 1;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[(byte >> 4) as usize] as char);
            out.push(HEX_UPPER[(byte & 15) as usize] as char);
        }
    }
}

/// The CANONICAL_QUERY of api.md for a query as received (without the ``?``).
pub fn canonical_query(raw: &[u8]) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = raw
        .split(|&b| b == b'&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.iter().position(|&b| b == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &b""[..]),
            };
            let (mut n, mut v) = (String::new(), String::new());
            recode(name, &mut n);
            recode(value, &mut v);
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut joined = String::with_capacity(raw.len() + 8);
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            joined.push('&');
        }
        joined.push_str(name);
        joined.push('=');
        joined.push_str(value);
    }
    joined
}

/// The exact bytes a channel signs, given the canonical query.
pub fn string_to_sign(
    method: &str,
    path: &[u8],
    canonical: &str,
    timestamp: &str,
    nonce: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let mut text = Vec::with_capacity(method.len() + path.len() + canonical.len() + 128);
    text.extend(method.bytes().map(|b| b.to_ascii_uppercase()));
    text.push(b'\n');
    text.extend_from_slice(path);
    text.push(b'\n');
    text.extend_from_slice(canonical.as_bytes());
    text.push(b'\n');
    text.extend_from_slice(timestamp.as_bytes());
    text.push(b'\n');
    text.extend_from_slice(nonce);
    text.push(b'\n');
    if body.is_empty() {
        text.extend_from_slice(EMPTY_BODY_SHA256);
    } else {
        for byte in Sha256::digest(body) {
            text.push(b"0123456789abcdef"[(byte >> 4) as usize]);
            text.push(b"0123456789abcdef"[(byte & 15) as usize]);
        }
    }
    text
}

/// hex(sha256("")): the body hash of every request without a body (a GET), known beforehand.
const EMPTY_BODY_SHA256: &[u8; 64] =
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An HMAC-SHA256 key made ready once (per snapshot): its inner and outer pads are hashed
/// when it is made, so each MAC under it saves those two SHA-256 blocks.
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl MacKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// A MAC of ``message`` under this key, to finalize or verify.
    pub fn mac(&self, message: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(message);
        mac
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)") // never the secret
    }
}

fn mac(secret: &[u8], message: &[u8]) -> HmacSha256 {
    MacKey::new(secret).mac(message)
}

/// The base64 HMAC-SHA256 signature of a request under ``secret``.
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &[u8],
    raw_query: &[u8],
    timestamp: &str,
    nonce: &[u8],
    body: &[u8],
) -> String {
    let message = string_to_sign(
        method,
        path,
        &canonical_query(raw_query),
        timestamp,
        nonce,
        body,
    );
    STANDARD.encode(mac(secret, &message).finalize().into_bytes())
}

/// The canonical query when ``signature`` is right (compared in constant time), else None
/// (the tests' form; the request path keeps its keys ready: [`verified_query_with`]).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn verified_query(
    secret: &[u8],
    signature: &[u8],
    method: &str,
    path: &[u8],
    raw_query: &[u8],
    timestamp: &str,
    nonce: &[u8],
    body: &[u8],
) -> Option<String> {
    let key = MacKey::new(secret);
    verified_query_with(
        &key, signature, method, path, raw_query, timestamp, nonce, body,
    )
}

/// [`verified_query`] under a key made ready beforehand (the snapshot's channels).
#[allow(clippy::too_many_arguments)]
pub fn verified_query_with(
    key: &MacKey,
    signature: &[u8],
    method: &str,
    path: &[u8],
    raw_query: &[u8],
    timestamp: &str,
    nonce: &[u8],
    body: &[u8],
) -> Option<String> {
    let canonical = canonical_query(raw_query);
    let message = string_to_sign(method, path, &canonical, timestamp, nonce, body);
    // A base64 HMAC-SHA256 is 44 characters: decode what was presented and let the MAC
    // compare in constant time.
    let presented = STANDARD.decode(signature).ok()?;
    key.mac(&message).verify_slice(&presented).ok()?;
    // Base64 has one encoding per digest only with canonical padding bits: compare the text
    // too, so that exactly the string Python accepts is accepted.
    let expected = STANDARD.encode(&presented);
    (expected.as_bytes() == signature).then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/signing.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("tests/vectors/signing.json"))
            .unwrap()
    }

    /// api.md's contract vectors, copied as tests/unit/gateway/test_signing.py has them.
    #[test]
    fn api_md_contract_vectors() {
        let cases = [
            (
                "demo-app-secret-0001",
                "GET",
                "/api/v1/customers/3300000001/bills",
                "month=2026-10&b=2&a=1",
                "1763779200",
                "n-7f3a9c2e1b",
                "",
                "CkJh4JF8bDDPdM6En3KunQV7T5omnDBKvluZxYmUqvI=",
            ),
            (
                "demo-app-secret-0001",
                "POST",
                "/api/v1/auth/token",
                "",
                "1763779200",
                "nonce-000000000001",
                r#"{"grant_type":"password","phone":"13800000001","password":"Passw0rd!x"}"#,
                "iZuUQuJolOoWUGYZuvRlVPI/JiuK3OYqs2ARlv9ubMY=",
            ),
            (
                "s3crét-wechat",
                "GET",
                "/api/v1/notices/outages",
                "region=%E8%A5%BF%E6%B9%96&page=1",
                "1763779260",
                "abcDEF123_-xyz",
                "",
                "LaopJ7WOZ00TTlsxUROVT/sdcLuHU6/oEG7TbVJpGxM=",
            ),
        ];
        for (secret, method, path, query, ts, nonce, body, signature) in cases {
            let args = (
                path.as_bytes(),
                query.as_bytes(),
                ts,
                nonce.as_bytes(),
                body.as_bytes(),
            );
            assert_eq!(
                sign(
                    secret.as_bytes(),
                    method,
                    args.0,
                    args.1,
                    args.2,
                    args.3,
                    args.4
                ),
                signature
            );
            assert!(
                verified_query(
                    secret.as_bytes(),
                    signature.as_bytes(),
                    method,
                    args.0,
                    args.1,
                    args.2,
                    args.3,
                    args.4
                )
                .is_some()
            );
        }
    }

    #[test]
    fn shared_canonical_query_vectors() {
        let vectors = vectors();
        let cases = vectors["canonical_queries"].as_array().unwrap();
        assert!(cases.len() > 10);
        for case in cases {
            let query = case["query"].as_str().unwrap();
            let canonical = case["canonical"].as_str().unwrap();
            assert_eq!(
                canonical_query(query.as_bytes()),
                canonical,
                "{}",
                case["note"]
            );
            assert_eq!(
                canonical_query(canonical.as_bytes()),
                canonical,
                "{}",
                case["note"]
            );
        }
    }

    #[test]
    fn shared_signature_vectors() {
        let vectors = vectors();
        for case in vectors["signatures"].as_array().unwrap() {
            let text = |key: &str| case[key].as_str().unwrap();
            let (path, query, body) = (
                text("path").as_bytes(),
                text("query").as_bytes(),
                text("body").as_bytes(),
            );
            let canonical = canonical_query(query);
            assert_eq!(canonical, text("canonical_query"), "{}", text("name"));
            let message = string_to_sign(
                text("method"),
                path,
                &canonical,
                text("timestamp"),
                text("nonce").as_bytes(),
                body,
            );
            assert_eq!(
                String::from_utf8(message).unwrap(),
                text("string_to_sign"),
                "{}",
                text("name")
            );
            let secret = text("secret").as_bytes();
            assert_eq!(
                sign(
                    secret,
                    text("method"),
                    path,
                    query,
                    text("timestamp"),
                    text("nonce").as_bytes(),
                    body
                ),
                text("signature"),
                "{}",
                text("name")
            );
            assert_eq!(
                verified_query(
                    secret,
                    text("signature").as_bytes(),
                    text("method"),
                    path,
                    query,
                    text("timestamp"),
                    text("nonce").as_bytes(),
                    body
                ),
                Some(canonical)
            );
        }
    }

    #[test]
    fn the_empty_body_hash_is_sha256_of_nothing() {
        let hex: String = Sha256::digest(b"")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex.as_bytes(), EMPTY_BODY_SHA256);
        let message = string_to_sign("GET", b"/p", "", "1", b"n", b"");
        assert!(message.ends_with(hex.as_bytes()));
        assert_eq!(format!("{:?}", MacKey::new(b"secret")), "MacKey(..)");
    }

    #[test]
    fn tampering_and_reading_differently_fail() {
        let secret = b"demo-app-secret-0001";
        let signature = sign(
            secret,
            "GET",
            b"/p",
            b"q=a+b",
            "1",
            b"nonce-000000000001",
            b"",
        );
        for other in ["q=a%20b", "q=a+c", ""] {
            assert!(
                verified_query(
                    secret,
                    signature.as_bytes(),
                    "GET",
                    b"/p",
                    other.as_bytes(),
                    "1",
                    b"nonce-000000000001",
                    b""
                )
                .is_none()
            );
        }
        assert!(
            verified_query(
                secret,
                b"x",
                "GET",
                b"/p",
                b"q=a+b",
                "1",
                b"nonce-000000000001",
                b""
            )
            .is_none()
        );
        assert!(
            verified_query(
                b"other",
                signature.as_bytes(),
                "GET",
                b"/p",
                b"q=a+b",
                "1",
                b"nonce-000000000001",
                b""
            )
            .is_none()
        );
        assert_eq!(canonical_query(b"k=%FF%FE&j=%C3"), "j=%C3&k=%FF%FE");
        assert_eq!(canonical_query(b"k=%zz&x=%4"), "k=%25zz&x=%254");
    }
}
