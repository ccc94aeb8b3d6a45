//! Canary routing by version: an interface with a canary sends a share of its calls to the
//! instances of the canary version, the rest to those of its stable version.
//!
//! Per request: an ``X-GG-Version`` header naming either version picks it (any other value is
//! ignored; the header is a caller's ``x-gg-*`` one, so it is never forwarded). Otherwise the
//! 户号 (the balance key the consistent-hash balancer uses) decides by a stable hash, so one
//! customer stays on one side and raising the percentage only moves customers onto the
//! canary; a request without one is sent by chance. Instances of any other version get none
//! of this interface's calls while the canary is set; without a canary the version is not
//! looked at.

use std::sync::Arc;

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};

use crate::snapshot::CanaryDoc;

/// The header a caller pins a version with.
pub const VERSION_HEADER: &str = "x-gg-version";

/// Keys are hashed under this prefix, so the canary side of a customer does not follow from
/// the instance the consistent-hash ring gives him (it hashes the bare key).
const SALT: &[u8] = b"gridgate-canary:";

/// Buckets per percent: the hash is cut into 10 000 buckets.
const BUCKETS_PER_PERCENT: u64 = 100;

/// An interface's canary (compiled from the document's ``canary``).
#[derive(Debug, Clone)]
pub struct Canary {
    pub version: Arc<str>,
    /// 0–100.
    pub percent: u8,
}

impl Canary {
    /// The canary of ``interface`` (stable version ``stable``) as the document gives it.
    pub fn new(interface: &str, stable: &str, doc: CanaryDoc) -> Result<Self, String> {
        if doc.percent > 100 {
            return Err(format!(
                "interface {interface}: canary percent {} is not within 0–100",
                doc.percent
            ));
        }
        if doc.version == stable {
            return Err(format!(
                "interface {interface}: the canary version {:?} is the stable version",
                doc.version
            ));
        }
        Ok(Self {
            version: doc.version.into(),
            percent: doc.percent as u8,
        })
    }
}

/// The versions a request may be served by: the chosen one first, the other as the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sides {
    pub chosen: Arc<str>,
    pub other: Arc<str>,
    /// The interface's stable version (what an instance without a version serves).
    pub stable: Arc<str>,
}

/// The bucket of ``key`` in 0..10 000, the same in every process and for every interface.
fn bucket(key: &str) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid blake2b size");
    hasher.update(SALT);
    hasher.update(key.as_bytes());
    let mut out = [0u8; 8];
    hasher.finalize_variable(&mut out).expect("8 bytes");
    u64::from_be_bytes(out) % (100 * BUCKETS_PER_PERCENT)
}

/// Whether a request goes to the canary: by ``key``'s bucket, by chance without one.
pub fn to_canary(percent: u8, key: Option<&str>) -> bool {
    let cut = u64::from(percent) * BUCKETS_PER_PERCENT;
    match key {
        Some(key) => bucket(key) < cut,
        None => fastrand::u64(0..100 * BUCKETS_PER_PERCENT) < cut,
    }
}

/// The sides of a request of an interface with stable ``stable`` and ``canary``.
pub fn choose(
    stable: &Arc<str>,
    canary: &Canary,
    header: Option<&str>,
    key: Option<&str>,
) -> Sides {
    let canary_first = match header.map(str::trim) {
        Some(asked) if asked == &*canary.version => true,
        Some(asked) if asked == &**stable => false,
        _ => to_canary(canary.percent, key),
    };
    let (chosen, other) = if canary_first {
        (canary.version.clone(), stable.clone())
    } else {
        (stable.clone(), canary.version.clone())
    };
    Sides {
        chosen,
        other,
        stable: stable.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(percent: u8) -> Canary {
        Canary {
            version: "2".into(),
            percent,
        }
    }

    fn share(percent: u8) -> f64 {
        let stable: Arc<str> = "1".into();
        let keys = 20_000;
        let on_canary = (0..keys)
            .filter(|n| {
                let key = format!("33{n:08}");
                &*choose(&stable, &canary(percent), None, Some(&key)).chosen == "2"
            })
            .count();
        on_canary as f64 / f64::from(keys)
    }

    #[test]
    fn the_share_follows_the_percentage_over_many_customers() {
        assert_eq!(share(0), 0.0);
        assert_eq!(share(100), 1.0);
        let ten = share(10);
        assert!((0.09..=0.11).contains(&ten), "{ten}");
        let half = share(50);
        assert!((0.48..=0.52).contains(&half), "{half}");
    }

    #[test]
    fn a_customer_stays_on_one_side_and_a_higher_percentage_only_adds_customers() {
        let stable: Arc<str> = "1".into();
        for n in 0..2000 {
            let key = format!("33{n:08}");
            let at = |percent| &*choose(&stable, &canary(percent), None, Some(&key)).chosen == "2";
            let first = at(10);
            for _ in 0..3 {
                assert_eq!(at(10), first, "{key} moved");
            }
            if first {
                assert!(at(20), "{key} left the canary when it grew");
            }
        }
    }

    #[test]
    fn the_header_pins_either_version_and_other_values_are_ignored() {
        let stable: Arc<str> = "1".into();
        let sides = choose(&stable, &canary(0), Some("2"), Some("3300000001"));
        assert_eq!((&*sides.chosen, &*sides.other), ("2", "1"));
        let sides = choose(&stable, &canary(100), Some(" 1 "), Some("3300000001"));
        assert_eq!((&*sides.chosen, &*sides.other), ("1", "2"));
        for ignored in ["3", "", "v2"] {
            let sides = choose(&stable, &canary(0), Some(ignored), None);
            assert_eq!(&*sides.chosen, "1", "{ignored:?} pinned a version");
            let sides = choose(&stable, &canary(100), Some(ignored), None);
            assert_eq!(&*sides.chosen, "2", "{ignored:?} pinned a version");
        }
    }

    #[test]
    fn without_a_key_the_share_is_by_chance() {
        let on_canary = (0..20_000).filter(|_| to_canary(10, None)).count();
        assert!((1600..=2400).contains(&on_canary), "{on_canary}");
        assert!(!(0..1000).any(|_| to_canary(0, None)));
        assert!((0..1000).all(|_| to_canary(100, None)));
    }

    #[test]
    fn a_canary_must_differ_from_stable_and_stay_within_100_percent() {
        let doc = |version: &str, percent| CanaryDoc {
            version: version.into(),
            percent,
        };
        assert!(Canary::new("i", "1", doc("2", 100)).is_ok());
        let error = Canary::new("i", "1", doc("2", 101)).unwrap_err();
        assert!(
            error.contains("interface i") && error.contains("101"),
            "{error}"
        );
        assert!(Canary::new("i", "1", doc("1", 10)).is_err());
    }
}
