//! Passive health (registry/outlier.py): eject an instance after consecutive failures, for
//! 2 s doubling up to 300 s, then let one probe through (half-open). When every candidate
//! is ejected all of them are used (panic mode).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::snapshot::Instance;

#[derive(Default, Debug)]
struct Health {
    failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    probe_started: Option<Instant>,
}

/// The detector shared by every worker; healthy instances cost no entry and no lock.
pub struct Outlier {
    threshold: u32,
    base: Duration,
    max: Duration,
    probe_timeout: Duration,
    health: Mutex<HashMap<String, Health>>,
    any: AtomicBool,
}

impl Default for Outlier {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(2), Duration::from_secs(300))
    }
}

impl Outlier {
    /// A detector ejecting after ``threshold`` failures in a row.
    pub fn new(threshold: u32, base: Duration, max: Duration) -> Self {
        Self {
            threshold,
            base,
            max,
            probe_timeout: Duration::from_secs(30),
            health: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
        }
    }

    fn probing(&self, health: &Health, now: Instant) -> bool {
        health
            .probe_started
            .is_some_and(|s| now.saturating_duration_since(s) < self.probe_timeout)
    }

    fn ejected(&self, health: &Health, now: Instant) -> bool {
        match health.ejected_until {
            None => false,
            Some(until) => now < until || self.probing(health, now),
        }
    }

    fn eject(&self, health: &mut Health, now: Instant) {
        let factor = 2u32.saturating_pow(health.ejections.min(31));
        let period = self.base.saturating_mul(factor).min(self.max);
        health.ejected_until = Some(now + period);
        health.ejections += 1;
        health.failures = 0;
        health.probe_started = None;
    }

    /// The endpoints that may be called now; all of them when every one is ejected.
    pub fn eligible<'a>(&self, endpoints: &'a [Instance], now: Instant) -> Vec<&'a Instance> {
        let healthy = self.live(endpoints.iter(), now);
        if healthy.is_empty() {
            endpoints.iter().collect()
        } else {
            healthy
        }
    }

    /// Those of ``endpoints`` not ejected now (none when every one is: no panic mode here).
    pub fn live<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a Instance>,
        now: Instant,
    ) -> Vec<&'a Instance> {
        if !self.any.load(Ordering::Acquire) {
            return endpoints.collect();
        }
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        endpoints
            .filter(|e| {
                health
                    .get(&e.instance_id)
                    .is_none_or(|h| !self.ejected(h, now))
            })
            .collect()
    }

    /// A call is sent to ``instance_id``; for a half-open instance it is the one probe.
    pub fn record_start(&self, instance_id: &str, now: Instant) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(health) = map.get_mut(instance_id)
            && let Some(until) = health.ejected_until
            && now >= until
            && !self.probing(health, now)
        {
            health.probe_started = Some(now);
        }
    }

    /// How a call to ``instance_id`` went.
    pub fn report(&self, instance_id: &str, ok: bool, now: Instant) {
        if ok && !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            if let Some(health) = map.get(instance_id)
                && health.ejected_until.is_none_or(|until| now >= until)
            {
                map.remove(instance_id);
            }
        } else {
            let mut health = map.remove(instance_id).unwrap_or_default();
            match health.ejected_until {
                None => {
                    health.failures += 1;
                    if health.failures >= self.threshold {
                        self.eject(&mut health, now);
                    }
                }
                Some(until) if now >= until => self.eject(&mut health, now),
                Some(_) => {}
            }
            map.insert(instance_id.to_owned(), health);
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            instance_id: id.into(),
            host: "h".into(),
            port: 1,
            weight: 100,
            healthy: true,
            version: None,
            health_path: None,
            probe: None,
        }
    }

    #[test]
    fn ejects_after_failures_then_probes_and_panics_when_all_are_out() {
        let outlier = Outlier::new(3, Duration::from_secs(2), Duration::from_secs(300));
        let list = [instance("a"), instance("b")];
        let now = Instant::now();
        for _ in 0..3 {
            outlier.report("a", false, now);
        }
        let ids = |v: Vec<&Instance>| v.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(outlier.eligible(&list, now)), ["b"]);
        for _ in 0..3 {
            outlier.report("b", false, now);
        }
        assert_eq!(ids(outlier.eligible(&list, now)), ["a", "b"]); // panic mode
        let later = now + Duration::from_secs(3);
        outlier.record_start("a", later); // the probe
        // a is out while its probe runs; b's ejection is over and it waits for its own.
        assert_eq!(ids(outlier.eligible(&list, later)), ["b"]);
        outlier.report("a", true, later);
        assert_eq!(ids(outlier.eligible(&list, later)), ["a", "b"]);
        // b's probe fails: out again, for twice as long.
        outlier.record_start("b", later);
        outlier.report("b", false, later);
        assert_eq!(
            ids(outlier.eligible(&list, later + Duration::from_secs(3))),
            ["a"]
        );
    }
}
