//! User auth: EdDSA (Ed25519) access tokens against the JWKS keys (gateway/tokens.py).
//!
//! The checks and their order follow ``JwksVerifier`` and PyJWT: only ``EdDSA``, no ``crit``
//! or ``b64``, a known ``kid``, the signature, the required claims, ``exp``/``nbf``/``iat``
//! with leeway, ``iss``, ``aud``, then the gridgate claims. A verified token is remembered
//! until it expires; expiry and revocation are checked again on every use.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};

use crate::errors::GatewayError;

/// Far above any token we issue; bigger ones are refused unread.
pub const MAX_TOKEN_LENGTH: usize = 4096;
const VERIFIED_CACHE: usize = 50_000;
const REQUIRED: [&str; 8] = ["exp", "iat", "iss", "aud", "sub", "lvl", "ch", "sid"];

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub account_id: String,
    pub level: u8,
    pub channel: String,
    pub session_id: String,
    pub expires_at: i64,
    /// The 户号 bound when the token was issued (claim ``cns``).
    pub customer_nos: HashSet<String>,
}

/// Token checks that do not change per snapshot (settings).
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub leeway_s: f64,
    pub max_lifetime_s: f64,
    /// How long a revocation outlives its ``until`` (clock differences, the leeway).
    pub revocation_grace_s: f64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: "gridgate-accounts".into(),
            audience: "gridgate".into(),
            leeway_s: 5.0,
            max_lifetime_s: 960.0,
            revocation_grace_s: 60.0,
        }
    }
}

/// The Ed25519 signing keys of a JWKS by ``kid``; other keys are skipped.
pub fn keys_from_jwks(jwks: &Value) -> HashMap<String, VerifyingKey> {
    let mut found = HashMap::new();
    let Some(entries) = jwks.get("keys").and_then(Value::as_array) else {
        return found;
    };
    for entry in entries {
        let text = |name: &str| entry.get(name).and_then(Value::as_str);
        let usable = text("kty") == Some("OKP")
            && text("crv") == Some("Ed25519")
            && text("use").unwrap_or("sig") == "sig"
            && text("alg").unwrap_or("EdDSA") == "EdDSA"
            && entry.get("d").is_none();
        let (Some(kid), Some(x)) = (text("kid"), text("x")) else {
            continue;
        };
        if !usable || kid.is_empty() || x.len() != 43 || found.contains_key(kid) {
            continue;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(x) else {
            continue;
        };
        let Ok(array) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            continue;
        };
        if let Ok(key) = VerifyingKey::from_bytes(&array) {
            found.insert(kid.to_owned(), key);
        }
    }
    found
}

fn invalid(detail: &str) -> GatewayError {
    GatewayError::InvalidToken(detail.to_owned())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn text_claim(payload: &Map<String, Value>, name: &str) -> Result<String, GatewayError> {
    match payload.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(GatewayError::InvalidToken(format!(
            "claim {name} must be a non-empty string"
        ))),
    }
}

/// Verify ``token`` (signature, claims) at ``now`` (Unix seconds), without cache or revocation.
pub fn verify_token(
    token: &str,
    keys: &HashMap<String, VerifyingKey>,
    policy: &TokenPolicy,
    now: f64,
) -> Result<Claims, GatewayError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LENGTH {
        return Err(invalid("malformed token"));
    }
    let mut parts = token.split('.');
    let (Some(head64), Some(body64), Some(sig64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed token"));
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(head64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| invalid("malformed token"))?;
    if header.get("alg").and_then(Value::as_str) != Some("EdDSA")
        || header.contains_key("crit")
        || header.contains_key("b64")
    {
        return Err(invalid("unsupported token algorithm or header"));
    }
    let key = header
        .get("kid")
        .and_then(Value::as_str)
        .and_then(|kid| keys.get(kid))
        .ok_or_else(|| invalid(UNKNOWN_KEY))?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig64)
        .ok()
        .and_then(|raw| Signature::from_slice(&raw).ok())
        .ok_or_else(|| invalid("invalid token"))?;
    let signed = &token[..head64.len() + 1 + body64.len()];
    key.verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| invalid("invalid token"))?;
    let payload: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(body64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| invalid("invalid token"))?;
    if REQUIRED.iter().any(|name| !payload.contains_key(*name)) {
        return Err(invalid("invalid token"));
    }
    let leeway = policy.leeway_s;
    let exp = number(&payload["exp"]).ok_or_else(|| invalid("invalid token"))?;
    if exp <= now - leeway {
        return Err(invalid("token expired"));
    }
    if let Some(nbf) = payload.get("nbf")
        && number(nbf).ok_or_else(|| invalid("invalid token"))? > now + leeway
    {
        return Err(invalid("token not yet valid"));
    }
    let iat = number(&payload["iat"]).ok_or_else(|| invalid("invalid token"))?;
    if iat > now + leeway {
        return Err(invalid("token not yet valid"));
    }
    if payload["iss"].as_str() != Some(policy.issuer.as_str()) {
        return Err(invalid("invalid token"));
    }
    let audience_ok = match &payload["aud"] {
        Value::String(aud) => *aud == policy.audience,
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str() == Some(policy.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid("invalid token"));
    }
    let level = match &payload["lvl"] {
        Value::Number(n) => n.as_u64().filter(|l| *l <= 2),
        _ => None,
    }
    .ok_or_else(|| invalid("claim lvl must be 0, 1 or 2"))?;
    if exp - iat > policy.max_lifetime_s {
        return Err(invalid("token lifetime (exp - iat) too long"));
    }
    let customer_nos = match payload.get("cns") {
        None => HashSet::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<HashSet<_>>>()
            .ok_or_else(|| invalid("claim cns must be a list of strings"))?,
        Some(_) => return Err(invalid("claim cns must be a list of strings")),
    };
    Ok(Claims {
        account_id: text_claim(&payload, "sub")?,
        level: level as u8,
        channel: text_claim(&payload, "ch")?,
        session_id: text_claim(&payload, "sid")?,
        expires_at: exp as i64,
        customer_nos,
    })
}

/// Verified tokens until expiry, plus the sessions revoked since the last snapshot.
pub struct TokenCache {
    /// Keyed by the token: only a token whose signature verified gets in, so callers cannot
    /// choose the keys, and foldhash spares hashing 1 KiB tokens with SipHash.
    verified: DashMap<String, Arc<Claims>, foldhash::fast::RandomState>,
    revoked: DashMap<String, f64>,
    /// The key ids the cache was filled under: a key change forgets every token.
    kids: Mutex<Vec<(String, [u8; 32])>>,
    /// Tokens refused because their ``kid`` is not among the keys (read by the control plane).
    pub unknown_keys: AtomicU64,
}

const UNKNOWN_KEY: &str = "unknown signing key";

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            verified: DashMap::default(),
            revoked: DashMap::new(),
            kids: Mutex::new(Vec::new()),
            unknown_keys: AtomicU64::new(0),
        }
    }
}

impl TokenCache {
    /// Forget verified tokens when the keys changed.
    pub fn keys_loaded(&self, keys: &HashMap<String, VerifyingKey>) {
        let mut now: Vec<(String, [u8; 32])> = keys
            .iter()
            .map(|(k, v)| (k.clone(), v.to_bytes()))
            .collect();
        now.sort();
        let mut kids = self.kids.lock().unwrap_or_else(|e| e.into_inner());
        if *kids != now {
            self.verified.clear();
            *kids = now;
        }
    }

    /// Refuse the session's tokens until ``until`` (Unix seconds) plus the grace.
    pub fn revoke(&self, session_id: &str, until: f64) {
        let mut entry = self.revoked.entry(session_id.to_owned()).or_insert(until);
        if until > *entry {
            *entry = until;
        }
    }

    fn is_revoked(
        &self,
        session_id: &str,
        snapshot: &HashMap<String, f64>,
        policy: &TokenPolicy,
        now: f64,
    ) -> bool {
        let live = |until: f64| now < until + policy.revocation_grace_s;
        snapshot.get(session_id).is_some_and(|u| live(*u))
            || self.revoked.get(session_id).is_some_and(|u| live(*u))
    }

    /// Forget revocations whose tokens have all expired.
    pub fn purge(&self, policy: &TokenPolicy, now: f64) {
        self.revoked
            .retain(|_, until| now < *until + policy.revocation_grace_s);
    }

    /// The token's claims, from the cache or verified now.
    pub fn verify(
        &self,
        token: &str,
        keys: &HashMap<String, VerifyingKey>,
        revoked: &HashMap<String, f64>,
        policy: &TokenPolicy,
        now: f64,
    ) -> Result<Arc<Claims>, GatewayError> {
        if let Some(cached) = self.verified.get(token) {
            if now <= cached.expires_at as f64 + policy.leeway_s {
                if self.is_revoked(&cached.session_id, revoked, policy, now) {
                    return Err(invalid("session revoked"));
                }
                return Ok(Arc::clone(&cached));
            }
            drop(cached);
            self.verified.remove(token);
        }
        let claims = match verify_token(token, keys, policy, now) {
            Ok(claims) => Arc::new(claims),
            Err(GatewayError::InvalidToken(reason)) if reason == UNKNOWN_KEY => {
                // A key the JWKS did not have at the last fetch: the control plane fetches
                // it again early (a rotation), as it sees this count move.
                self.unknown_keys.fetch_add(1, Ordering::Relaxed);
                return Err(GatewayError::InvalidToken(reason));
            }
            Err(error) => return Err(error),
        };
        if self.is_revoked(&claims.session_id, revoked, policy, now) {
            return Err(invalid("session revoked"));
        }
        if self.verified.len() >= VERIFIED_CACHE {
            self.verified.clear(); // crude but bounded: a full cache refills within seconds
        }
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    pub fn signing_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    pub fn jwks(key: &SigningKey, kid: &str) -> Value {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())}]})
    }

    pub fn token(key: &SigningKey, kid: &str, claims: &Value) -> String {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{body}");
        let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
        format!("{signed}.{signature}")
    }

    pub fn claims(now: f64, level: u8, bound: &[&str]) -> Value {
        json!({"iss": "gridgate-accounts", "aud": "gridgate", "sub": "acc-1", "lvl": level,
            "ch": "app", "sid": "s1", "iat": now as i64, "exp": now as i64 + 900, "cns": bound})
    }

    #[test]
    fn verifies_a_good_token_and_refuses_bad_ones() {
        let key = signing_key();
        let keys = keys_from_jwks(&jwks(&key, "k1"));
        let policy = TokenPolicy::default();
        let now = 1_764_720_000.0;
        let good = token(&key, "k1", &claims(now, 1, &["3300000001"]));
        let found = verify_token(&good, &keys, &policy, now).unwrap();
        assert_eq!(found.level, 1);
        assert_eq!(found.account_id, "acc-1");
        assert!(found.customer_nos.contains("3300000001"));

        let detail = |t: &str, at: f64| match verify_token(t, &keys, &policy, at) {
            Err(GatewayError::InvalidToken(d)) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(detail(&good, now + 906.0), "token expired");
        assert_eq!(
            detail(&token(&key, "k2", &claims(now, 1, &[])), now),
            "unknown signing key"
        );
        let other = SigningKey::from_bytes(&[9u8; 32]);
        assert_eq!(
            detail(&token(&other, "k1", &claims(now, 1, &[])), now),
            "invalid token"
        );
        let mut tampered = good.clone();
        tampered.replace_range(
            good.len() - 5..good.len() - 4,
            if good.ends_with('A') { "B" } else { "A" },
        );
        assert!(verify_token(&tampered, &keys, &policy, now).is_err());
        let mut wrong = claims(now, 1, &[]);
        wrong["aud"] = json!("someone-else");
        assert_eq!(detail(&token(&key, "k1", &wrong), now), "invalid token");
        let mut long = claims(now, 1, &[]);
        long["exp"] = json!(now as i64 + 86_400);
        assert_eq!(
            detail(&token(&key, "k1", &long), now),
            "token lifetime (exp - iat) too long"
        );
        let mut level = claims(now, 1, &[]);
        level["lvl"] = json!(true);
        assert_eq!(
            detail(&token(&key, "k1", &level), now),
            "claim lvl must be 0, 1 or 2"
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(now, 2, &[]).to_string())
        );
        assert_eq!(detail(&none, now), "unsupported token algorithm or header");
        assert_eq!(detail("a.b", now), "malformed token");
    }

    /// A token with its own header (a JSON object), signed by ``key``.
    fn token_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
        format!("{signed}.{signature}")
    }

    #[test]
    fn refuses_the_header_and_time_tricks_the_python_verifier_refused() {
        use hmac::Mac;
        // The cases tests/unit/gateway/test_tokens.py checks on the Python verifier, here
        // where tokens are verified since the Python request path was deleted.
        let key = signing_key();
        let keys = keys_from_jwks(&jwks(&key, "k1"));
        let policy = TokenPolicy::default();
        let now = 1_764_720_000.0;
        let detail = |t: &str, at: f64| match verify_token(t, &keys, &policy, at) {
            Err(GatewayError::InvalidToken(d)) => d,
            other => panic!("{other:?}"),
        };
        let plain = claims(now, 1, &[]);
        for extra in [json!({"crit": ["exp"]}), json!({"b64": false})] {
            let mut header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"});
            header
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert_eq!(
                detail(&token_with_header(&key, &header, &plain), now),
                "unsupported token algorithm or header"
            );
        }
        // No kid: no key to check it with.
        let no_kid = token_with_header(&key, &json!({"alg": "EdDSA"}), &plain);
        assert_eq!(detail(&no_kid, now), "unknown signing key");
        // HS256 "signed" with the public key as the secret (algorithm confusion).
        let hs = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k1"}).to_string()),
            URL_SAFE_NO_PAD.encode(plain.to_string())
        );
        let mac = crate::signing::MacKey::new(&key.verifying_key().to_bytes()).mac(hs.as_bytes());
        let forged = format!(
            "{hs}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            detail(&forged, now),
            "unsupported token algorithm or header"
        );
        // Issued in the future beyond the leeway; within it, accepted.
        let leeway = policy.leeway_s;
        let mut early = plain.clone();
        early["iat"] = json!(now as i64 + leeway as i64 + 10);
        early["exp"] = json!(now as i64 + 900);
        assert_eq!(
            detail(&token(&key, "k1", &early), now),
            "token not yet valid"
        );
        let mut nbf = plain.clone();
        nbf["nbf"] = json!(now as i64 + leeway as i64 + 10);
        assert_eq!(detail(&token(&key, "k1", &nbf), now), "token not yet valid");
        let mut skewed = plain.clone();
        skewed["iat"] = json!(now as i64 + 1);
        assert!(verify_token(&token(&key, "k1", &skewed), &keys, &policy, now).is_ok());
        // Expired, but within the leeway: accepted; past it: refused.
        let good = token(&key, "k1", &plain);
        assert!(verify_token(&good, &keys, &policy, now + 900.0 + leeway - 1.0).is_ok());
        assert_eq!(detail(&good, now + 900.0 + leeway + 1.0), "token expired");
        // Every required claim must be there.
        for name in REQUIRED {
            let mut missing = plain.clone();
            missing.as_object_mut().unwrap().remove(name);
            assert!(
                verify_token(&token(&key, "k1", &missing), &keys, &policy, now).is_err(),
                "a token without {name} was accepted"
            );
        }
    }

    #[test]
    fn the_cache_still_checks_revocation_and_forgets_on_key_change() {
        let key = signing_key();
        let keys = keys_from_jwks(&jwks(&key, "k1"));
        let policy = TokenPolicy::default();
        let now = 1_764_720_000.0;
        let cache = TokenCache::default();
        cache.keys_loaded(&keys);
        let good = token(&key, "k1", &claims(now, 1, &[]));
        let none = HashMap::new();
        assert!(cache.verify(&good, &keys, &none, &policy, now).is_ok());
        cache.revoke("s1", now + 900.0);
        assert_eq!(
            cache.verify(&good, &keys, &none, &policy, now),
            Err(invalid("session revoked"))
        );
        let fresh = TokenCache::default();
        let revoked = HashMap::from([("s1".to_owned(), now + 900.0)]);
        assert!(fresh.verify(&good, &keys, &revoked, &policy, now).is_err());
        // Rotation: a removed key's tokens are checked again (and fail).
        fresh.verify(&good, &keys, &none, &policy, now).unwrap();
        let rotated = keys_from_jwks(&jwks(&SigningKey::from_bytes(&[3u8; 32]), "k2"));
        fresh.keys_loaded(&rotated);
        assert!(fresh.verify(&good, &rotated, &none, &policy, now).is_err());
    }
}
