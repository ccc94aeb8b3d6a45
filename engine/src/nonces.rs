//! Single-use nonces of every worker thread (gateway/nonces.py ``MemoryNonceStore``).
//!
//! A nonce is remembered per channel until ``timestamp + window``, i.e. ``2 × window`` from
//! its first use. Shards keep a lock held by one request for a hash look-up at most. Every
//! entry lives the same time, so each shard's entries expire in the order they came: a FIFO
//! is the expiry queue. A full shard refuses new nonces (503 ``flow.overloaded``) rather than
//! forgetting an unexpired one, which could then be replayed.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceRefusal {
    /// Already used by this channel within its lifetime.
    Replayed,
    /// The store is full of unexpired nonces; retry after this many seconds.
    Full { retry_after: u64 },
}

/// (channel, nonce).
type Key = (Box<str>, Box<str>);

#[derive(Default)]
struct Shard {
    live: HashSet<Key>,
    order: VecDeque<(Instant, Key)>,
}

impl Shard {
    fn expire(&mut self, now: Instant) {
        while let Some((expiry, _)) = self.order.front() {
            if *expiry > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.live.remove(&key);
            }
        }
    }
}

/// Nonces in process, shared by every worker thread.
pub struct NonceStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    ttl: Duration,
    hasher: RandomState,
}

impl NonceStore {
    /// A store of at most about ``max_entries`` nonces, each kept ``ttl``.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            ttl,
            hasher: RandomState::new(),
        }
    }

    /// Ok the first time ``nonce`` is seen for ``channel`` within its lifetime.
    pub fn first_use(&self, channel: &str, nonce: &str, now: Instant) -> Result<(), NonceRefusal> {
        let index = (self.hasher.hash_one((channel, nonce)) as usize) % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        shard.expire(now);
        let key: Key = (channel.into(), nonce.into());
        if shard.live.contains(&key) {
            return Err(NonceRefusal::Replayed);
        }
        if shard.live.len() >= self.per_shard {
            let wait = shard
                .order
                .front()
                .map(|(expiry, _)| expiry.saturating_duration_since(now).as_secs_f64().ceil())
                .unwrap_or(1.0);
            return Err(NonceRefusal::Full {
                retry_after: (wait as u64).max(1),
            });
        }
        shard.live.insert(key.clone());
        shard.order.push_back((now + self.ttl, key));
        Ok(())
    }

    /// How many nonces are remembered now (expired ones may still count until touched).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.live.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_single_use_per_channel_until_it_expires() {
        let store = NonceStore::new(1000, Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(store.first_use("app", "nonce-000000000001", now), Ok(()));
        assert_eq!(
            store.first_use("app", "nonce-000000000001", now),
            Err(NonceRefusal::Replayed)
        );
        assert_eq!(store.first_use("web", "nonce-000000000001", now), Ok(()));
        let later = now + Duration::from_secs(601);
        assert_eq!(store.first_use("app", "nonce-000000000001", later), Ok(()));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting() {
        let store = NonceStore::new(SHARDS, Duration::from_secs(600)); // one per shard
        let now = Instant::now();
        let mut refused = None;
        for index in 0..10 * SHARDS {
            if let Err(refusal) = store.first_use("app", &format!("nonce-{index:012}"), now) {
                refused = Some((index, refusal));
                break;
            }
        }
        let (index, refusal) = refused.expect("a full shard refuses");
        assert_eq!(refusal, NonceRefusal::Full { retry_after: 600 });
        // Every accepted nonce is still refused as a replay: none was forgotten.
        for earlier in 0..index {
            let nonce = format!("nonce-{earlier:012}");
            assert_ne!(store.first_use("app", &nonce, now), Ok(()));
        }
    }
}
