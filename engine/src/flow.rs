//! Flow: rate limits and concurrency gates (gateway/flow.py, docs/api.md "Flow control").
//!
//! Rate limits are the exact moving window of the Python gateway: at most ``N`` requests of a
//! key in any one second, and ``Retry-After`` says when the oldest hit leaves the window. The
//! window of a key keeps at most ``N`` timestamps. Keys live in a sharded map (dashmap): one
//! short shard lock per limit checked, never held across an await.
//!
//! Gates are tokio semaphores (FIFO fair): ``max_concurrency`` at once, at most ``max_queue``
//! waiting, each for at most ``max_wait``; the global gate after the interface's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::Config;
use crate::errors::GatewayError;
use crate::exchange::Exchange;

const SWEEP_EVERY: u64 = 10_000;

/// The client's rate-limit bucket (addresses.py ``client_bucket``): an IPv4 address as it is,
/// an IPv6 address as its /64 (``2001:db8:1:2::/64``), an IPv4-mapped one as the IPv4; a zone
/// id is ignored; anything else is its own bucket.
pub fn client_bucket(address: &str) -> String {
    if !address.contains(':') {
        return address.to_owned();
    }
    let bare = address.split('%').next().unwrap_or(address);
    match bare.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let masked = u128::from(ip) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(masked))
            }
        },
        Err(_) => address.to_owned(),
    }
}

/// One rate window a request hits: its key (stages.py ``RateLimit``) and requests per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHit {
    pub key: String,
    pub per_second: u32,
}

/// The windows of a request, in the order they are counted (stages.py ``RateLimit``): per
/// client address and per account on the interface first (a request they refuse does not
/// spend the channel's or the interface's budget), then per channel and per interface.
pub fn windows(exchange: &Exchange<'_>, config: &Config) -> Vec<RateHit> {
    let interface = exchange.interface.expect("route runs first");
    let mut hits = Vec::with_capacity(4);
    if let Some(limit) = interface
        .client_rate_limit_per_s
        .or(config.client_rate_limit_per_s)
        && !exchange.client_ip.is_empty()
    {
        hits.push(RateHit {
            key: format!(
                "client:{}:{}",
                interface.code,
                client_bucket(&exchange.client_ip)
            ),
            per_second: limit,
        });
    }
    if let Some(limit) = interface
        .account_rate_limit_per_s
        .or(config.account_rate_limit_per_s)
        && let Some(claims) = &exchange.claims
    {
        hits.push(RateHit {
            key: format!("account:{}:{}", interface.code, claims.account_id),
            per_second: limit,
        });
    }
    if let Some(channel) = exchange.channel
        && let Some(limit) = channel.rate_limit_per_s
    {
        hits.push(RateHit {
            key: format!("channel:{}", channel.code),
            per_second: limit,
        });
    }
    if let Some(limit) = interface.rate_limit_per_s {
        hits.push(RateHit {
            key: format!("interface:{}", interface.code),
            per_second: limit,
        });
    }
    hits.retain(|hit| hit.per_second > 0);
    hits
}

/// Moving windows of one second per key, shared by every worker.
#[derive(Default)]
pub struct RateWindows {
    hits: DashMap<String, VecDeque<Instant>>,
    until_sweep: AtomicU64,
}

impl RateWindows {
    /// Count one hit of ``key`` against ``per_second``; 429 ``flow.rate_limited`` when spent.
    pub fn hit(&self, key: &str, per_second: u32, now: Instant) -> Result<(), GatewayError> {
        let window = Duration::from_secs(1);
        let amount = per_second.max(1) as usize;
        let refused = {
            let mut times = match self.hits.get_mut(key) {
                Some(times) => times,
                None => self.hits.entry(key.to_owned()).or_default(),
            };
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            if times.len() >= amount {
                let oldest = times[times.len() - amount];
                Some((oldest + window).saturating_duration_since(now))
            } else {
                times.push_back(now);
                None
            }
        };
        if self.until_sweep.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.hits.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
        match refused {
            None => Ok(()),
            Some(wait) => Err(GatewayError::RateLimited {
                detail: format!("more than {amount} requests in 1 s"),
                retry_after: (wait.as_secs_f64().ceil() as u64).max(1),
            }),
        }
    }

    /// Keys with a window now.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether no key has a window.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
}

/// One concurrency gate: ``limit`` at once, FIFO line of at most ``max_queue``.
pub struct Gate {
    permits: Arc<Semaphore>,
    limit: AtomicU32,
    waiting: AtomicU32,
}

/// A slot held until dropped.
pub struct Slot {
    _permits: Vec<OwnedSemaphorePermit>,
}

impl Gate {
    /// A gate of ``limit`` slots.
    pub fn new(limit: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit: AtomicU32::new(limit),
            waiting: AtomicU32::new(0),
        }
    }

    /// Raise or lower the slots (a catalog reload); holders are never cut short.
    pub fn resize(&self, limit: u32) {
        let old = self.limit.swap(limit, Ordering::AcqRel);
        if limit > old {
            self.permits.add_permits((limit - old) as usize);
        } else if limit < old {
            self.permits.forget_permits((old - limit) as usize);
        }
    }

    /// A slot now, or after waiting in line; the time waited.
    pub async fn enter(
        &self,
        max_queue: u32,
        max_wait: Duration,
    ) -> Result<(OwnedSemaphorePermit, Duration), GatewayError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok((permit, Duration::ZERO));
        }
        let retry_after = (max_wait.as_secs_f64().ceil() as u64).max(1);
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.waiting);
        if waiting >= max_queue || max_wait.is_zero() {
            return Err(GatewayError::Overloaded {
                detail: "too many requests are waiting".into(),
                retry_after,
            });
        }
        let started = Instant::now();
        match tokio::time::timeout(max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok((permit, started.elapsed())),
            _ => Err(GatewayError::Overloaded {
                detail: format!("no slot within {} s", fmt_seconds(max_wait)),
                retry_after,
            }),
        }
    }
}

struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn fmt_seconds(duration: Duration) -> String {
    // Python's ``f"{x:g}"`` for the usual values (0.5, 1, 2.5).
    let seconds = duration.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{}", seconds as u64)
    } else {
        format!("{seconds}")
    }
}

/// The optional global gate plus one gate per interface, created on first use.
pub struct Gates {
    global: Option<(Gate, u32, Duration)>,
    by_interface: DashMap<String, Arc<Gate>>,
}

impl Gates {
    /// ``global``: (max concurrency, max queue, max wait) of the whole gateway, if any.
    pub fn new(global: Option<(u32, u32, Duration)>) -> Self {
        Self {
            global: global.map(|(limit, queue, wait)| (Gate::new(limit), queue, wait)),
            by_interface: DashMap::new(),
        }
    }

    /// The interface's slot (none without ``limit``), then a global one; the time waited.
    pub async fn enter(
        &self,
        interface: &str,
        limit: Option<u32>,
        max_queue: u32,
        max_wait: Duration,
    ) -> Result<(Slot, Duration), GatewayError> {
        let mut permits = Vec::with_capacity(2);
        let mut waited = Duration::ZERO;
        if let Some(limit) = limit {
            let gate = match self.by_interface.get(interface) {
                Some(gate) => gate.clone(),
                None => self
                    .by_interface
                    .entry(interface.to_owned())
                    .or_insert_with(|| Arc::new(Gate::new(limit)))
                    .clone(),
            };
            if gate.limit.load(Ordering::Acquire) != limit {
                gate.resize(limit);
            }
            let (permit, spent) = gate.enter(max_queue, max_wait).await?;
            permits.push(permit);
            waited += spent;
        }
        if let Some((gate, queue, wait)) = &self.global {
            // The wait in both gates together stays within the interface's bound.
            let budget = (*wait).min(max_wait.saturating_sub(waited));
            let (permit, spent) = gate.enter(*queue, budget).await?;
            permits.push(permit);
            waited += spent;
        }
        Ok((Slot { _permits: permits }, waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_in_any_second_with_retry_after() {
        let windows = RateWindows::default();
        let start = Instant::now();
        for _ in 0..3 {
            windows.hit("channel:app", 3, start).unwrap();
        }
        match windows.hit("channel:app", 3, start + Duration::from_millis(200)) {
            Err(GatewayError::RateLimited {
                retry_after,
                detail,
            }) => {
                assert_eq!(retry_after, 1);
                assert_eq!(detail, "more than 3 requests in 1 s");
            }
            other => panic!("{other:?}"),
        }
        // Another key has its own window; the refused hit was not counted.
        windows.hit("interface:x", 1, start).unwrap();
        windows
            .hit("channel:app", 3, start + Duration::from_millis(1000))
            .unwrap();
        assert!(
            windows
                .hit("channel:app", 3, start + Duration::from_millis(1001))
                .is_ok()
        );
        assert!(
            windows
                .hit("channel:app", 3, start + Duration::from_millis(1002))
                .is_ok()
        );
        assert!(
            windows
                .hit("channel:app", 3, start + Duration::from_millis(1003))
                .is_err()
        );
    }

    #[test]
    fn client_buckets_are_those_of_python() {
        assert_eq!(client_bucket("10.0.0.1"), "10.0.0.1");
        assert_eq!(client_bucket("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(client_bucket("fe80::1%eth0"), "fe80::/64");
        assert_eq!(client_bucket("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(client_bucket("2001::1"), "2001::/64");
        assert_eq!(client_bucket("not:an:address"), "not:an:address");
    }

    #[tokio::test]
    async fn a_gate_queues_then_refuses() {
        let gates = Gates::new(None);
        let wait = Duration::from_millis(50);
        let (held, waited) = gates.enter("i", Some(1), 1, wait).await.unwrap();
        assert_eq!(waited, Duration::ZERO);
        // The line is one long and the wait runs out: 503 flow.overloaded.
        let refused = gates.enter("i", Some(1), 1, wait).await;
        assert!(matches!(
            refused,
            Err(GatewayError::Overloaded { retry_after: 1, .. })
        ));
        let no_queue = gates.enter("i", Some(1), 0, wait).await;
        assert!(matches!(no_queue, Err(GatewayError::Overloaded { .. })));
        drop(held);
        assert!(gates.enter("i", Some(1), 0, wait).await.is_ok());
    }
}
