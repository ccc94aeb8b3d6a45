//! The gateway's ``X-GG-Internal`` signature on calls to business systems (internal_auth.py).
//!
//! ```text
//! string_to_sign = "v1" "\n" SERVICE "\n" TIMESTAMP "\n" METHOD "\n" TARGET "\n" HEADERS
//! HEADERS        = for each signed header, sorted by name:  name ":" value "\n"
//! ```
//! Signed: every ``x-gg-*`` header but ``x-gg-internal``, and ``x-trace-id``; values trimmed.

use hmac::Mac;
use http::HeaderMap;

use crate::signing::MacKey;

fn signed(name: &str) -> bool {
    (name.starts_with("x-gg-") && name != "x-gg-internal") || name == "x-trace-id"
}

/// The bytes signed for one call.
pub fn string_to_sign(
    service: &str,
    timestamp: u64,
    method: &str,
    target: &str,
    headers: &HeaderMap,
) -> Vec<u8> {
    let mut text = Vec::with_capacity(256 + target.len());
    text.extend_from_slice(b"v1\n");
    text.extend_from_slice(service.as_bytes());
    text.push(b'\n');
    // The decimal digits of the timestamp (no core::fmt on the request path).
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = timestamp;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend_from_slice(&digits[at..]);
    text.push(b'\n');
    text.extend(method.bytes().map(|b| b.to_ascii_uppercase()));
    text.push(b'\n');
    text.extend_from_slice(target.as_bytes());
    text.push(b'\n');
    let mut chosen: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(name, _)| signed(name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_bytes().trim_ascii()))
        .collect();
    chosen.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in chosen {
        text.extend_from_slice(name.as_bytes());
        text.push(b':');
        text.extend_from_slice(value);
        text.push(b'\n');
    }
    text
}

/// The ``X-GG-Internal`` value of a call to ``service`` with these headers.
pub fn header_value(
    key: &MacKey,
    service: &str,
    timestamp: u64,
    method: &str,
    target: &str,
    headers: &HeaderMap,
) -> String {
    let message = string_to_sign(service, timestamp, method, target, headers);
    let digest = key.mac(&message).finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[(byte >> 4) as usize]));
        hex.push(char::from(b"0123456789abcdef"[(byte & 15) as usize]));
    }
    format!("v1;{service};{timestamp};{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// docs/api.md's vector (tests/unit/test_internal_auth.py).
    #[test]
    fn api_md_internal_vector() {
        let key: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"9302532a9a476a495b15323c0158e99bd9c59b24cb3b658089356946aecee76a"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-gg-channel", "app"),
            ("x-gg-account", "0123456789abcdef0123456789abcdef"),
            ("x-gg-level", "1"),
            ("x-gg-session", "fedcba9876543210fedcba9876543210"),
            ("x-gg-client-ip", "203.0.113.7"),
            ("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("accept", "application/json"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let target = "/api/v1/customers/3300000001/bills?month=2026-10";
        assert_eq!(
            header_value(
                &MacKey::new(&key),
                "billing",
                1_764_720_000,
                "GET",
                target,
                &headers
            ),
            "v1;billing;1764720000;8024397a25d35b3c1ecd65fdecf77915024311803d5f666964b4dfa2a68760a4"
        );
        for timestamp in [0, 7, 10, 1_764_720_000, u64::MAX] {
            let text = string_to_sign("s", timestamp, "get", "/t", &HeaderMap::new());
            assert_eq!(text, format!("v1\ns\n{timestamp}\nGET\n/t\n").into_bytes());
        }
    }
}
