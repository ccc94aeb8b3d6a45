//! Balancers (registry/balancers.py): smooth weighted round-robin, weighted random,
//! least-in-flight and consistent hash by 户号, with the same weights rule.
//!
//! Weights run 0–100; weight 0 drains an instance: it is chosen only when every candidate
//! left has weight 0, and then all of them share equally.

use std::collections::HashMap;
use std::sync::Mutex;

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use dashmap::DashMap;

use crate::snapshot::Instance;

const FULL_WEIGHT: u32 = 100;
const VNODES_AT_FULL_WEIGHT: u32 = 160;

/// The candidates left after ``exclude``, each with the weight to balance by.
fn weighted<'a>(endpoints: &[&'a Instance], exclude: &[&str]) -> Vec<(&'a Instance, u32)> {
    let allowed: Vec<&Instance> = endpoints
        .iter()
        .copied()
        .filter(|e| !exclude.contains(&e.instance_id.as_str()))
        .collect();
    let positive: Vec<(&Instance, u32)> = allowed
        .iter()
        .filter(|e| e.weight > 0)
        .map(|e| (*e, e.weight))
        .collect();
    if positive.is_empty() {
        allowed.into_iter().map(|e| (e, FULL_WEIGHT)).collect()
    } else {
        positive
    }
}

/// nginx's smooth weighted round-robin step over a non-empty candidate list.
fn smooth_pick<'a>(
    current: &mut HashMap<String, i64>,
    candidates: &[(&'a Instance, u32)],
) -> &'a Instance {
    let mut total = 0i64;
    let mut best: Option<(&Instance, i64)> = None;
    for (endpoint, weight) in candidates {
        let value = current.entry(endpoint.instance_id.clone()).or_insert(0);
        *value += i64::from(*weight);
        total += i64::from(*weight);
        // Python's max() keeps the first of equal values.
        if best.is_none_or(|(_, b)| *value > b) {
            best = Some((endpoint, *value));
        }
    }
    let (chosen, _) = best.expect("a non-empty candidate list");
    *current.get_mut(&chosen.instance_id).expect("just added") -= total;
    chosen
}

fn prune(state: &mut HashMap<String, i64>, endpoints: &[&Instance]) {
    if state.len() > endpoints.len() {
        state.retain(|id, _| endpoints.iter().any(|e| &e.instance_id == id));
    }
}

/// A 64-bit hash that is the same in every process and in Python (blake2b, 8 bytes).
pub fn hash64(text: &str) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid blake2b size");
    hasher.update(text.as_bytes());
    let mut out = [0u8; 8];
    hasher.finalize_variable(&mut out).expect("8 bytes");
    u64::from_be_bytes(out)
}

struct Ring {
    signature: Vec<(String, u32)>,
    points: Vec<u64>,
    owners: Vec<String>,
}

impl Ring {
    fn build(mut signature: Vec<(String, u32)>) -> Self {
        signature.sort();
        let mut nodes: Vec<(u64, String)> = Vec::new();
        for (id, weight) in &signature {
            let count = ((f64::from(VNODES_AT_FULL_WEIGHT) * f64::from(*weight)
                / f64::from(FULL_WEIGHT))
            .round() as u32)
                .max(1);
            for index in 0..count {
                nodes.push((hash64(&format!("{id}#{index}")), id.clone()));
            }
        }
        nodes.sort();
        Self {
            signature,
            points: nodes.iter().map(|(p, _)| *p).collect(),
            owners: nodes.into_iter().map(|(_, o)| o).collect(),
        }
    }

    fn owner(&self, key: &str, allowed: &[(&Instance, u32)]) -> Option<String> {
        let start = self.points.partition_point(|p| *p < hash64(key));
        let size = self.owners.len();
        (0..size)
            .map(|step| &self.owners[(start + step) % size])
            .find(|owner| allowed.iter().any(|(e, _)| &e.instance_id == *owner))
            .cloned()
    }
}

/// The strategy an interface names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    WeightedRandom,
    LeastInFlight,
    ConsistentHash,
}

impl Balance {
    /// The strategy called ``name`` in the catalog.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "round_robin" => Balance::RoundRobin,
            "weighted_random" => Balance::WeightedRandom,
            "least_in_flight" => Balance::LeastInFlight,
            "consistent_hash" => Balance::ConsistentHash,
            _ => return None,
        })
    }
}

/// Balancer state of the whole engine: rotations per interface, calls in flight per
/// instance, hash rings per service.
#[derive(Default)]
pub struct Balancers {
    rotations: DashMap<String, Mutex<HashMap<String, i64>>>,
    in_flight: DashMap<String, i64>,
    rings: DashMap<Vec<(String, u32)>, std::sync::Arc<Ring>>,
}

impl Balancers {
    fn rotate<'a>(
        &self,
        interface: &str,
        endpoints: &[&'a Instance],
        candidates: &[(&'a Instance, u32)],
    ) -> &'a Instance {
        if !self.rotations.contains_key(interface) {
            self.rotations.entry(interface.to_owned()).or_default();
        }
        let entry = self.rotations.get(interface).expect("inserted above");
        let mut current = entry.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut current, endpoints);
        smooth_pick(&mut current, candidates)
    }

    fn ring(&self, candidates: &[(&Instance, u32)]) -> std::sync::Arc<Ring> {
        let mut signature: Vec<(String, u32)> = candidates
            .iter()
            .map(|(e, w)| (e.instance_id.clone(), *w))
            .collect();
        signature.sort();
        if let Some(ring) = self.rings.get(&signature) {
            return ring.clone();
        }
        if self.rings.len() > 64 {
            self.rings.clear(); // instance sets change rarely: a bounded cache will do
        }
        let ring = std::sync::Arc::new(Ring::build(signature.clone()));
        debug_assert_eq!(ring.signature, signature);
        self.rings.insert(signature, ring.clone());
        ring
    }

    /// The instance for the next call, or None when none is eligible.
    pub fn pick<'a>(
        &self,
        balance: Balance,
        interface: &str,
        endpoints: &[&'a Instance],
        key: Option<&str>,
        exclude: &[&str],
    ) -> Option<&'a Instance> {
        if endpoints.len() == 1 && balance == Balance::RoundRobin {
            let only = endpoints[0];
            return (!exclude.contains(&only.instance_id.as_str())).then_some(only);
        }
        let candidates = weighted(endpoints, exclude);
        if candidates.is_empty() {
            return None;
        }
        match balance {
            Balance::RoundRobin => Some(self.rotate(interface, endpoints, &candidates)),
            Balance::WeightedRandom => {
                let total: u32 = candidates.iter().map(|(_, w)| *w).sum();
                let mut point = fastrand::u32(0..total.max(1));
                for (endpoint, weight) in &candidates {
                    if point < *weight {
                        return Some(endpoint);
                    }
                    point -= weight;
                }
                candidates.last().map(|(e, _)| *e)
            }
            Balance::LeastInFlight => {
                let count =
                    |e: &Instance| self.in_flight.get(&e.instance_id).map(|c| *c).unwrap_or(0);
                let fewest = candidates.iter().map(|(e, _)| count(e)).min().unwrap_or(0);
                let idlest: Vec<(&Instance, u32)> = candidates
                    .iter()
                    .copied()
                    .filter(|(e, _)| count(e) == fewest)
                    .collect();
                Some(self.rotate(interface, endpoints, &idlest))
            }
            Balance::ConsistentHash => {
                let Some(key) = key else {
                    return Some(self.rotate(interface, endpoints, &candidates));
                };
                let full = weighted(endpoints, &[]);
                let owner = self
                    .ring(&full)
                    .owner(key, &candidates)
                    .or_else(|| self.ring(&candidates).owner(key, &candidates))?;
                candidates
                    .iter()
                    .find(|(e, _)| e.instance_id == owner)
                    .map(|(e, _)| *e)
            }
        }
    }

    /// A call to ``instance_id`` has started.
    pub fn acquire(&self, instance_id: &str) {
        *self.in_flight.entry(instance_id.to_owned()).or_insert(0) += 1;
    }

    /// A call to ``instance_id`` has ended, however it ended.
    pub fn release(&self, instance_id: &str) {
        self.in_flight.remove_if_mut(instance_id, |_, count| {
            *count -= 1;
            *count <= 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, weight: u32) -> Instance {
        Instance {
            instance_id: id.into(),
            host: "127.0.0.1".into(),
            port: 1,
            weight,
            healthy: true,
            version: None,
            health_path: None,
            probe: None,
        }
    }

    #[test]
    fn round_robin_follows_weights_smoothly_and_drains_zero_weight() {
        let (a, b, c) = (instance("a", 100), instance("b", 50), instance("z", 0));
        let endpoints = [&a, &b, &c];
        let balancers = Balancers::default();
        let picks: Vec<String> = (0..6)
            .map(|_| {
                balancers
                    .pick(Balance::RoundRobin, "i", &endpoints, None, &[])
                    .unwrap()
                    .instance_id
                    .clone()
            })
            .collect();
        assert_eq!(picks, ["a", "b", "a", "a", "b", "a"]);
        let only_zero = balancers
            .pick(Balance::RoundRobin, "i", &endpoints, None, &["a", "b"])
            .unwrap();
        assert_eq!(only_zero.instance_id, "z");
    }

    #[test]
    fn consistent_hash_is_stable_and_matches_python() {
        // hashlib.blake2b(b"3300000001", digest_size=8).digest(), big-endian.
        assert_eq!(hash64("3300000001"), 0x9eca_988b_634d_99c9);
        let (a, b, c) = (instance("a", 100), instance("b", 100), instance("c", 100));
        let endpoints = [&a, &b, &c];
        let balancers = Balancers::default();
        let first = balancers
            .pick(
                Balance::ConsistentHash,
                "i",
                &endpoints,
                Some("3300000001"),
                &[],
            )
            .unwrap();
        for _ in 0..5 {
            let again = balancers
                .pick(
                    Balance::ConsistentHash,
                    "i",
                    &endpoints,
                    Some("3300000001"),
                    &[],
                )
                .unwrap();
            assert_eq!(again.instance_id, first.instance_id);
        }
        // Excluding the owner moves this key only.
        let moved = balancers
            .pick(
                Balance::ConsistentHash,
                "i",
                &endpoints,
                Some("3300000001"),
                &[first.instance_id.as_str()],
            )
            .unwrap();
        assert_ne!(moved.instance_id, first.instance_id);
    }

    #[test]
    fn least_in_flight_prefers_the_idlest() {
        let (a, b) = (instance("a", 100), instance("b", 100));
        let endpoints = [&a, &b];
        let balancers = Balancers::default();
        balancers.acquire("a");
        for _ in 0..3 {
            assert_eq!(
                balancers
                    .pick(Balance::LeastInFlight, "i", &endpoints, None, &[])
                    .unwrap()
                    .instance_id,
                "b"
            );
        }
        balancers.release("a");
        balancers.release("a"); // never negative
        assert!(balancers.in_flight.is_empty());
    }
}
