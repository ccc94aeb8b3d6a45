//! Redis mode: nonces and rate windows shared by every gateway node, and the revocation feed.
//!
//! Selected by ``Config::redis_url``. The keys are those of the Python gateway, so Python and
//! Rust nodes can share one Redis during the migration:
//!
//! - a nonce: ``gg:nonce:<channel>:<nonce>``, ``SET NX EX 600`` (nonces.py ``RedisNonceStore``);
//! - a rate window: ``gg:rate:LIMITER/<key>/<per second>/1/second``, a list of hit times
//!   (newest first, trimmed to the limit, expiring with the window) — the key layout and the
//!   algorithm of the ``limits`` library's Redis moving window (``acquire_moving_window.lua``)
//!   that flow.py ``RateLimiter`` uses with ``key_prefix="gg:rate"``; ``<key>`` is the
//!   stages.py one (``client:<interface>:<bucket>``, ``account:<interface>:<account>``,
//!   ``channel:<code>``, ``interface:<code>``);
//! - revocations: the sorted set ``gg:revoked:sessions`` (session id scored by ``until``) and
//!   the channel ``gg:revoked:events`` (``{"sid": …, "until": …}``), tokens.py
//!   ``RedisRevocationFeed``.
//!
//! A request costs one round trip: [`SCRIPT`] sets the nonce and counts every window of the
//! request atomically, in the order Python counts them, and says which one refused and when
//! to retry. It runs by ``EVALSHA`` (loaded on first use and again after a ``NOSCRIPT``, e.g.
//! when Redis restarted) over one multiplexed connection per engine, so concurrent requests
//! are pipelined on it.
//!
//! Redis Cluster: the keys of one script must hash to one slot. Python's keys carry no hash
//! tag, so they only work with one Redis (what Python supports too). ``redis_hash_tag`` puts
//! every key of the gateway under one tag (``gg:{<tag>}:nonce:…``, ``gg:{<tag>}:rate:…``):
//! still shared correctly by every node, and one slot per request, at the price of one slot
//! (one shard) for all of the gateway's nonces and windows. A tag per channel or per request
//! would spread the load but break the sharing: the interface and per-client windows would be
//! counted once per channel (or per request, i.e. not at all), and a nonce under a per-request
//! tag could be replayed. Those keys are not Python's: set the tag only once no Python node
//! shares the Redis.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tokio::sync::OnceCell;

use crate::errors::GatewayError;
use crate::flow::RateHit;
use crate::user_auth::{TokenCache, TokenPolicy};

/// The nonce's lifetime in Redis: ``2 × WINDOW_S`` (stages.py), whole seconds.
pub const NONCE_TTL_S: u64 = 2 * crate::signing::WINDOW_S;
/// tokens.py ``RedisRevocationFeed`` defaults.
pub const REVOKED_SESSIONS: &str = "gg:revoked:sessions";
pub const REVOKED_EVENTS: &str = "gg:revoked:events";
const RELOAD: Duration = Duration::from_secs(1);

/// The per-request script. KEYS: the nonce key when ARGV[1] is "1", then one key per window.
/// ARGV: has nonce, nonce ttl (s), then limit and window (s) per window. The hit times are
/// Redis's clock (``TIME``), not the node's: every engine counts on one clock, and each list
/// stays in time order (Python's ``limits`` pushes each node's own ``time.time()``; with the
/// node clocks in sync, as flow.py asks, the two agree).
/// Answers ``{0, ""}`` when admitted, ``{-1, ""}`` for a used nonce, ``{i, wait}`` when the
/// i-th window (1-based) is spent: ``wait`` seconds until its oldest hit leaves it. A refused
/// window is not counted; windows counted before it stay counted (as in Python).
pub const SCRIPT: &str = r#"
local clock = redis.call('time')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local first = 1
if ARGV[1] == '1' then
  if not redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
    return {-1, ''}
  end
  first = 2
end
for i = first, #KEYS do
  local at = 3 + (i - first) * 2
  local limit = tonumber(ARGV[at])
  local expiry = tonumber(ARGV[at + 1])
  local entry = redis.call('lindex', KEYS[i], limit - 1)
  if entry and tonumber(entry) >= now - expiry then
    return {i - first + 1, tostring(tonumber(entry) + expiry - now)}
  end
  redis.call('lpush', KEYS[i], now)
  redis.call('ltrim', KEYS[i], 0, limit - 1)
  redis.call('expire', KEYS[i], expiry)
end
return {0, ''}
"#;

/// Why the script refused a request.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Replayed,
    /// The index of the spent window in the hits given, and the seconds to wait.
    RateLimited(usize, f64),
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The 503 of an unreachable or failing Redis.
pub fn unavailable() -> GatewayError {
    GatewayError::StoreUnavailable(
        "the gateway's shared store (Redis) is unavailable; try again shortly".into(),
    )
}

/// Nonces and rate windows in Redis, shared by every engine (and Python node) using it.
pub struct RedisStore {
    client: Client,
    connection: OnceCell<ConnectionManager>,
    script: Script,
    timeout: Duration,
    nonce_prefix: String,
    rate_prefix: String,
}

impl RedisStore {
    /// A store for ``url``; nothing connects until the first request. ``hash_tag``: see the
    /// module documentation.
    pub fn new(url: &str, timeout: Duration, hash_tag: Option<&str>) -> redis::RedisResult<Self> {
        if hash_tag.is_some_and(|tag| tag.is_empty() || tag.contains(['{', '}'])) {
            return Err((
                redis::ErrorKind::InvalidClientConfig,
                "redis_hash_tag must be non-empty and without braces",
            )
                .into());
        }
        let (nonce_prefix, rate_prefix) = match hash_tag {
            None => ("gg:nonce:".to_owned(), "gg:rate".to_owned()),
            Some(tag) => (format!("gg:{{{tag}}}:nonce:"), format!("gg:{{{tag}}}:rate")),
        };
        Ok(Self {
            client: Client::open(url)?,
            connection: OnceCell::new(),
            script: Script::new(SCRIPT),
            timeout,
            nonce_prefix,
            rate_prefix,
        })
    }

    /// The client (for the feed and the log stream).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key of a nonce (nonces.py: ``<prefix><channel>:<nonce>``).
    pub fn nonce_key(&self, channel: &str, nonce: &str) -> String {
        format!("{}{channel}:{nonce}", self.nonce_prefix)
    }

    /// The key of a window (``limits``: ``<prefix>:LIMITER/<key>/<amount>/<multiples>/second``).
    pub fn rate_key(&self, hit: &RateHit) -> String {
        format!(
            "{}:LIMITER/{}/{}/1/second",
            self.rate_prefix, hit.key, hit.per_second
        )
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(connection.clone())
    }

    /// Run the script: spend ``nonce`` (channel, nonce) if given, then count ``hits``.
    pub async fn run(
        &self,
        nonce: Option<(&str, &str)>,
        hits: &[RateHit],
    ) -> Result<Result<(), Refusal>, GatewayError> {
        if nonce.is_none() && hits.is_empty() {
            return Ok(Ok(()));
        }
        let mut invocation = self.script.prepare_invoke();
        match nonce {
            Some((channel, nonce)) => {
                invocation.key(self.nonce_key(channel, nonce)).arg("1");
            }
            None => {
                invocation.arg("0");
            }
        }
        invocation.arg(NONCE_TTL_S);
        for hit in hits {
            invocation
                .key(self.rate_key(hit))
                .arg(hit.per_second)
                .arg(1);
        }
        let call = async {
            let mut connection = self.connection().await?;
            invocation.invoke_async::<Value>(&mut connection).await
        };
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => answer,
            _ => return Err(unavailable()),
        };
        let (status, wait): (i64, String) =
            redis::FromRedisValue::from_redis_value(answer).map_err(|_| unavailable())?;
        Ok(match status {
            0 => Ok(()),
            -1 => Err(Refusal::Replayed),
            index => Err(Refusal::RateLimited(
                (index - 1).max(0) as usize,
                wait.parse().unwrap_or(1.0),
            )),
        })
    }

    /// The request's nonce and windows, as the request path's errors.
    pub async fn admit(
        &self,
        nonce: Option<(&str, &str)>,
        hits: &[RateHit],
    ) -> Result<(), GatewayError> {
        match self.run(nonce, hits).await? {
            Ok(()) => Ok(()),
            Err(Refusal::Replayed) => Err(replayed()),
            Err(Refusal::RateLimited(index, wait)) => {
                let amount = hits.get(index).map_or(0, |h| h.per_second);
                Err(GatewayError::RateLimited {
                    detail: format!("more than {amount} requests in 1 s"),
                    retry_after: (wait.ceil() as u64).max(1),
                })
            }
        }
    }
}

/// stages.py's answer to a used nonce.
pub fn replayed() -> GatewayError {
    GatewayError::ChannelReplayed("this nonce was already used".into())
}

fn apply_event(payload: &[u8], tokens: &TokenCache) {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return; // the reload still finds real ones
    };
    let sid = event.get("sid").and_then(serde_json::Value::as_str);
    let until = event.get("until").and_then(|u| match u {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    if let (Some(sid), Some(until)) = (sid, until)
        && !sid.is_empty()
    {
        tokens.revoke(sid, until);
    }
}

async fn reload(
    connection: &mut redis::aio::MultiplexedConnection,
    tokens: &TokenCache,
    grace_s: f64,
) -> redis::RedisResult<()> {
    let horizon = unix_now() - grace_s;
    let (_, members): (i64, Vec<(String, f64)>) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(REVOKED_SESSIONS)
        .arg("-inf")
        .arg(format!("({horizon}"))
        .cmd("ZRANGEBYSCORE")
        .arg(REVOKED_SESSIONS)
        .arg(horizon.to_string())
        .arg("+inf")
        .arg("WITHSCORES")
        .query_async(connection)
        .await?;
    for (sid, until) in members {
        tokens.revoke(&sid, until);
    }
    Ok(())
}

async fn bounded_reload(
    connection: &mut redis::aio::MultiplexedConnection,
    tokens: &TokenCache,
    grace_s: f64,
) -> redis::RedisResult<()> {
    match tokio::time::timeout(RELOAD * 2, reload(connection, tokens, grace_s)).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

async fn follow(
    client: &Client,
    tokens: &TokenCache,
    policy: &TokenPolicy,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(REVOKED_EVENTS).await?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    // Subscribed before the first reload, so nothing falls between the two.
    bounded_reload(&mut connection, tokens, policy.revocation_grace_s).await?;
    let mut messages = pubsub.on_message();
    let mut tick = tokio::time::interval(RELOAD);
    tick.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => apply_event(message.get_payload_bytes(), tokens),
                None => return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
            },
            _ = tick.tick() => {
                bounded_reload(&mut connection, tokens, policy.revocation_grace_s).await?;
                tokens.purge(policy, unix_now());
            }
        }
    }
}

/// Follow the revocations in Redis (tokens.py ``RedisRevocationFeed.run``): subscribed to the
/// events for immediate effect, the set re-read every second, reconnecting after failures.
/// Runs until the task is dropped (the engine's runtime stops).
pub async fn revocation_feed(client: Client, shared: Arc<crate::engine::Shared>) {
    loop {
        let _ = follow(&client, &shared.tokens, &shared.token_policy).await;
        // Known revocations stay in memory; new ones wait for the reconnection.
        tokio::time::sleep(RELOAD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_those_of_the_python_gateway() {
        let store = RedisStore::new("redis://127.0.0.1:1/", Duration::from_secs(1), None).unwrap();
        assert_eq!(
            store.nonce_key("app", "nonce-0000000000001"),
            "gg:nonce:app:nonce-0000000000001"
        );
        let hit = RateHit {
            key: "client:t.x:10.0.0.1".into(),
            per_second: 5,
        };
        assert_eq!(
            store.rate_key(&hit),
            "gg:rate:LIMITER/client:t.x:10.0.0.1/5/1/second"
        );
        let tagged =
            RedisStore::new("redis://127.0.0.1:1/", Duration::from_secs(1), Some("gg")).unwrap();
        assert_eq!(tagged.nonce_key("app", "n"), "gg:{gg}:nonce:app:n");
        assert_eq!(
            tagged.rate_key(&hit),
            "gg:{gg}:rate:LIMITER/client:t.x:10.0.0.1/5/1/second"
        );
        for bad in ["", "a{b", "}"] {
            assert!(
                RedisStore::new("redis://127.0.0.1:1/", Duration::from_secs(1), Some(bad)).is_err()
            );
        }
    }
}
