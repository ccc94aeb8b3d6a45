//! The engine's whole view of policy: one typed, versioned snapshot, compiled once per push.
//!
//! Python (gridgate/gateway/engine.py) compiles the catalog, permissions, field rules,
//! registry instances, JWKS and revocations into one JSON document; [`Snapshot::compile`]
//! turns it into look-up tables. The server swaps a whole snapshot in (arc-swap), so a request
//! sees one snapshot from its first stage to its last.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use ipnet::IpNet;
use serde::Deserialize;

use crate::canary::Canary;
use crate::dispatch::Balance;
use crate::fields::{FieldFilter, FieldRule};
use crate::health::Probe;
use crate::route::Router;
use crate::signing::MacKey;
use crate::user_auth::keys_from_jwks;

/// The snapshot's maps: keyed by what the control plane compiled (codes, paths, services),
/// which a caller only looks up and never inserts, so foldhash (randomly seeded per map) is
/// enough; SipHash stays on the maps that grow from callers' input (nonces, rate windows,
/// the token cache).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set of the snapshot (see [`FastMap`]).
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// A channel as the document carries it.
#[derive(Deserialize, Debug, Clone)]
pub struct ChannelDoc {
    pub code: String,
    pub secret: String,
    pub enabled: bool,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
}

/// A business system as the document carries it: it signs its calls with its password.
#[derive(Deserialize, Debug, Clone)]
pub struct SystemDoc {
    pub code: String,
    pub secret: String,
}

/// An interface as the document carries it (snapshot.py ``InterfaceView``).
#[derive(Deserialize, Debug, Clone)]
pub struct InterfaceDoc {
    pub code: String,
    pub method: String,
    pub path: String,
    pub enabled: bool,
    pub requires_client_auth: bool,
    pub min_level: u8,
    pub idempotent: bool,
    pub timeout_ms: u64,
    pub target_service: String,
    pub balancer: String,
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub max_queue: u32,
    #[serde(default)]
    pub max_wait_ms: u64,
    #[serde(default)]
    pub channels: Vec<String>,
    /// The business systems granted this interface (system-to-system calls).
    #[serde(default)]
    pub systems: Vec<String>,
    #[serde(default)]
    pub customer_scope: Option<String>,
    #[serde(default)]
    pub client_rate_limit_per_s: Option<u32>,
    #[serde(default)]
    pub account_rate_limit_per_s: Option<u32>,
    /// The stable version: what instances without a version of their own serve.
    #[serde(default = "stable_version")]
    pub version: String,
    /// A canary version taking a share of the calls (see [`crate::canary`]).
    #[serde(default)]
    pub canary: Option<CanaryDoc>,
}

/// ``{"version": "2", "percent": 10}``: the canary version and its share of the calls.
#[derive(Deserialize, Debug, Clone)]
pub struct CanaryDoc {
    pub version: String,
    pub percent: u32,
}

fn stable_version() -> String {
    "1".into()
}

#[derive(Deserialize, Debug, Clone)]
pub struct PermissionDoc {
    pub channel: String,
    pub interface: String,
    pub min_level: u8,
}

/// What components and functions ask of an interface on one channel (permissions/levels.py):
/// at least ``min_level`` there, or (null) refused there. Unlike a [`PermissionDoc`], it does
/// not close the interface to other channels.
#[derive(Deserialize, Debug, Clone)]
pub struct LevelDoc {
    pub channel: String,
    pub interface: String,
    pub min_level: Option<u8>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct FieldRuleDoc {
    pub interface: String,
    #[serde(default)]
    pub channel: Option<String>,
    pub path: String,
    pub action: String,
    pub below_level: u8,
}

/// A registry instance (registry/client.py ``InstanceInfo``).
#[derive(Deserialize, Debug, Clone)]
pub struct Instance {
    pub instance_id: String,
    pub host: String,
    pub port: u16,
    #[serde(default = "full_weight")]
    pub weight: u32,
    #[serde(default = "healthy")]
    pub healthy: bool,
    /// The version it serves (registry metadata ``version``); none: the stable version of
    /// whichever interface calls it.
    #[serde(default)]
    pub version: Option<String>,
    /// What the active health check asks for (registry metadata ``health_path``); none:
    /// [`DEFAULT_HEALTH_PATH`].
    #[serde(default)]
    pub health_path: Option<String>,
    /// The active health check's verdict on its address, attached when the snapshot is
    /// loaded (none while checks are off: healthy).
    #[serde(skip)]
    pub probe: Option<Arc<Probe>>,
}

/// The health path of an instance that names none.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";

impl Instance {
    /// Whether the active health check lets it serve.
    pub fn probed_healthy(&self) -> bool {
        self.probe.as_ref().is_none_or(|p| p.healthy())
    }

    /// Whether it serves ``version`` for an interface whose stable version is ``stable``.
    pub fn serves(&self, version: &str, stable: &str) -> bool {
        self.version.as_deref().unwrap_or(stable) == version
    }
}

fn full_weight() -> u32 {
    100
}

fn healthy() -> bool {
    true
}

/// Field rules already compiled by Python, per level (see [`FieldFilter::from_plans`]).
#[derive(Deserialize, Debug, Clone)]
pub struct FilterDoc {
    pub interface: String,
    #[serde(default)]
    pub channel: Option<String>,
    pub plans: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct RevokedDoc {
    pub sid: String,
    pub until: f64,
}

/// The document Python pushes.
#[derive(Deserialize, Debug, Default)]
pub struct Document {
    pub version: u64,
    pub revision: i64,
    #[serde(default)]
    pub channels: Vec<ChannelDoc>,
    #[serde(default)]
    pub systems: Vec<SystemDoc>,
    #[serde(default)]
    pub interfaces: Vec<InterfaceDoc>,
    #[serde(default)]
    pub permissions: Vec<PermissionDoc>,
    #[serde(default)]
    pub levels: Vec<LevelDoc>,
    /// Rules as stored (compiled here) …
    #[serde(default)]
    pub field_rules: Vec<FieldRuleDoc>,
    /// … or as Python compiled them (these win for the same interface and channel).
    #[serde(default)]
    pub filters: Vec<FilterDoc>,
    #[serde(default)]
    pub instances: HashMap<String, Vec<Instance>>,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub revoked: Vec<RevokedDoc>,
    /// Per target service: the ``X-GG-Internal`` key, hex (internal_auth.py ``InternalKeys``).
    #[serde(default)]
    pub internal_keys: HashMap<String, String>,
}

/// The field rules of one interface: for every channel, and a channel's own (which include
/// the former).
#[derive(Debug, Default)]
pub struct InterfaceFilters {
    pub general: Option<Arc<FieldFilter>>,
    pub channels: FastMap<String, Arc<FieldFilter>>,
}

/// What the request path needs of a channel.
#[derive(Debug)]
pub struct Channel {
    pub code: String,
    /// The channel secret as an HMAC key made ready once per snapshot.
    pub key: MacKey,
    pub enabled: bool,
    pub networks: Vec<IpNet>,
    pub rate_limit_per_s: Option<u32>,
}

impl Channel {
    /// Whether ``address`` lies in an allowed network (no networks: any address).
    pub fn allows(&self, address: &str) -> bool {
        if self.networks.is_empty() {
            return true;
        }
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) => self.networks.iter().any(|net| net.contains(&ip)),
            Err(_) => false,
        }
    }
}

/// What the request path needs of a business system calling an interface itself.
#[derive(Debug)]
pub struct System {
    pub code: String,
    /// The system's password as an HMAC key made ready once per snapshot.
    pub key: MacKey,
    /// How the access record and the metrics name it: ``system:<code>``. Catalog codes
    /// cannot contain ``:``, so it never equals a channel's code.
    pub label: String,
}

/// Where an interface finds the 户号 a request names (its ``customer_scope``).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Path(String),
    Body(String),
}

/// What the request path needs of an interface.
#[derive(Debug)]
pub struct Interface {
    pub code: String,
    pub method: String,
    pub enabled: bool,
    pub requires_client_auth: bool,
    pub min_level: u8,
    pub idempotent: bool,
    pub timeout_ms: u64,
    pub target_service: String,
    pub balance: Balance,
    pub rate_limit_per_s: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub max_queue: u32,
    pub max_wait_ms: u64,
    pub channels: HashSet<String>,
    pub systems: HashSet<String>,
    pub scope: Option<Scope>,
    pub client_rate_limit_per_s: Option<u32>,
    pub account_rate_limit_per_s: Option<u32>,
    /// The stable version, and the canary when one is set.
    pub version: Arc<str>,
    pub canary: Option<Canary>,
}

/// One consistent compiled policy.
pub struct Snapshot {
    pub version: u64,
    pub revision: i64,
    pub router: Router,
    pub interfaces: Vec<Interface>,
    pub channels: FastMap<String, Channel>,
    pub systems: FastMap<String, System>,
    pub perm_levels: FastMap<(String, String), u8>,
    pub permissioned: FastSet<String>,
    /// (channel, interface) → the level components and functions ask there; None refuses.
    pub levels: FastMap<(String, String), Option<u8>>,
    /// The interfaces with at least one entry in ``levels``.
    pub leveled: FastSet<String>,
    /// Per interface: its field rules for every channel, and per channel.
    pub filters: FastMap<String, InterfaceFilters>,
    /// Per service: the healthy instances in address order, all of them when none is.
    pub instances: FastMap<String, Arc<Vec<Instance>>>,
    pub keys: HashMap<String, VerifyingKey>,
    pub revoked: HashMap<String, f64>,
    /// Per service: the ``X-GG-Internal`` key, made ready once per snapshot.
    pub internal_keys: FastMap<String, MacKey>,
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An instance's health path, checked: absolute (a missing leading ``/`` is added).
fn health_path(instance: &Instance) -> Result<String, String> {
    let path = match instance.health_path.as_deref() {
        None | Some("") => return Ok(DEFAULT_HEALTH_PATH.to_owned()),
        Some(path) if path.starts_with('/') => path.to_owned(),
        Some(path) => format!("/{path}"),
    };
    match path.parse::<http::uri::PathAndQuery>() {
        Ok(_) => Ok(path),
        Err(_) => Err(format!("health_path {path:?} is not a URL path")),
    }
}

impl Snapshot {
    /// An empty snapshot: every request answers 503 ``service.starting`` until one is loaded.
    pub fn empty() -> Self {
        Self::compile(Document {
            revision: -1,
            ..Default::default()
        })
        .expect("empty compiles")
    }

    /// Parse and compile a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let document: Document =
            serde_json::from_slice(bytes).map_err(|e| format!("snapshot document: {e}"))?;
        Self::compile(document)
    }

    /// Build the router and look-up tables.
    pub fn compile(document: Document) -> Result<Self, String> {
        let mut router = Router::default();
        let mut interfaces = Vec::with_capacity(document.interfaces.len());
        for (index, doc) in document.interfaces.into_iter().enumerate() {
            router.insert(&doc.method, &doc.path, index);
            let scope = match doc.customer_scope.as_deref() {
                None => None,
                Some(text) => match text.split_once(':') {
                    Some(("path", name)) => Some(Scope::Path(name.to_owned())),
                    Some((_, name)) => Some(Scope::Body(name.to_owned())),
                    None => Some(Scope::Body(String::new())),
                },
            };
            let canary = doc
                .canary
                .map(|canary| Canary::new(&doc.code, &doc.version, canary))
                .transpose()?;
            interfaces.push(Interface {
                balance: Balance::parse(&doc.balancer)
                    .ok_or_else(|| format!("interface {}: unknown balancer", doc.code))?,
                version: doc.version.into(),
                canary,
                code: doc.code,
                method: doc.method,
                enabled: doc.enabled,
                requires_client_auth: doc.requires_client_auth,
                min_level: doc.min_level,
                idempotent: doc.idempotent,
                timeout_ms: doc.timeout_ms,
                target_service: doc.target_service,
                rate_limit_per_s: doc.rate_limit_per_s,
                max_concurrency: doc.max_concurrency,
                max_queue: doc.max_queue,
                max_wait_ms: doc.max_wait_ms,
                channels: doc.channels.into_iter().collect(),
                systems: doc.systems.into_iter().collect(),
                scope,
                client_rate_limit_per_s: doc.client_rate_limit_per_s,
                account_rate_limit_per_s: doc.account_rate_limit_per_s,
            });
        }
        let mut channels = FastMap::default();
        for doc in document.channels {
            let networks = doc
                .allowed_ips
                .iter()
                .map(|text| {
                    text.parse::<IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("channel {}: bad network {text:?}", doc.code))
                })
                .collect::<Result<Vec<_>, _>>()?;
            channels.insert(
                doc.code.clone(),
                Channel {
                    key: MacKey::new(doc.secret.as_bytes()),
                    code: doc.code,
                    enabled: doc.enabled,
                    networks,
                    rate_limit_per_s: doc.rate_limit_per_s,
                },
            );
        }
        let systems = document
            .systems
            .into_iter()
            .map(|doc| {
                let system = System {
                    label: format!("system:{}", doc.code),
                    key: MacKey::new(doc.secret.as_bytes()),
                    code: doc.code,
                };
                (system.code.clone(), system)
            })
            .collect();
        let perm_levels: FastMap<(String, String), u8> = document
            .permissions
            .into_iter()
            .map(|p| ((p.channel, p.interface), p.min_level))
            .collect();
        let permissioned = perm_levels
            .keys()
            .map(|(_, interface)| interface.clone())
            .collect();
        let levels: FastMap<(String, String), Option<u8>> = document
            .levels
            .into_iter()
            .map(|l| ((l.channel, l.interface), l.min_level))
            .collect();
        let leveled = levels
            .keys()
            .map(|(_, interface)| interface.clone())
            .collect();
        // The rules for every channel come first, then a channel's own (snapshot.py).
        let mut general: HashMap<String, Vec<FieldRule>> = HashMap::new();
        let mut specific: HashMap<(String, String), Vec<FieldRule>> = HashMap::new();
        for doc in document.field_rules {
            let rule = FieldRule {
                path: doc.path,
                action: doc.action,
                below_level: doc.below_level,
            };
            match doc.channel {
                None => general.entry(doc.interface).or_default().push(rule),
                Some(channel) => specific
                    .entry((doc.interface, channel))
                    .or_default()
                    .push(rule),
            }
        }
        let mut filters: FastMap<String, InterfaceFilters> = FastMap::default();
        let mut put = |interface: String, channel: Option<String>, filter: FieldFilter| {
            let entry = filters.entry(interface).or_default();
            match channel {
                Some(channel) => {
                    entry.channels.insert(channel, Arc::new(filter));
                }
                None => entry.general = Some(Arc::new(filter)),
            }
        };
        for ((interface, channel), rules) in specific {
            let mut all = general.get(&interface).cloned().unwrap_or_default();
            all.extend(rules);
            put(interface, Some(channel), FieldFilter::compile(&all)?);
        }
        for (interface, rules) in general {
            put(interface, None, FieldFilter::compile(&rules)?);
        }
        for doc in document.filters {
            let filter = FieldFilter::from_plans(&doc.plans)
                .map_err(|e| format!("field rules of {}: {e}", doc.interface))?;
            put(doc.interface, doc.channel, filter);
        }
        let instances = document
            .instances
            .into_iter()
            .map(|(service, mut every)| {
                for instance in &mut every {
                    instance.health_path = Some(health_path(instance).map_err(|e| {
                        format!("instance {} of {service}: {e}", instance.instance_id)
                    })?);
                }
                every.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
                let healthy: Vec<Instance> = every.iter().filter(|i| i.healthy).cloned().collect();
                Ok((
                    service,
                    Arc::new(if healthy.is_empty() { every } else { healthy }),
                ))
            })
            .collect::<Result<_, String>>()?;
        let keys = match &document.jwks {
            Some(jwks) => keys_from_jwks(jwks),
            None => HashMap::new(),
        };
        let internal_keys = document
            .internal_keys
            .into_iter()
            .map(|(service, hex)| {
                hex_decode(&hex)
                    .map(|key| (service.clone(), MacKey::new(&key)))
                    .ok_or_else(|| format!("internal key of {service}: not hex"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            version: document.version,
            revision: document.revision,
            router,
            interfaces,
            channels,
            systems,
            perm_levels,
            permissioned,
            levels,
            leveled,
            filters,
            instances,
            keys,
            revoked: document
                .revoked
                .into_iter()
                .map(|r| (r.sid, r.until))
                .collect(),
            internal_keys,
        })
    }

    /// The field rules for a caller of ``interface`` on ``channel``, if any.
    pub fn field_filter(
        &self,
        interface: &str,
        channel: Option<&str>,
    ) -> Option<&Arc<FieldFilter>> {
        let for_interface = self.filters.get(interface)?;
        channel
            .and_then(|channel| for_interface.channels.get(channel))
            .or(for_interface.general.as_ref())
    }

    /// The level a caller on ``channel`` needs for ``interface``; None when the channel may not.
    /// The interface permission says which channels may call; ``levels`` only raise the
    /// level on their channel, or refuse there (gateway/stages.py ``required_level``).
    pub fn required_level(&self, channel: &str, interface: &Interface) -> Option<u8> {
        let mut required = interface.min_level;
        let permissioned = self.permissioned.contains(&interface.code);
        let leveled = self.leveled.contains(&interface.code);
        if !permissioned && !leveled {
            return Some(required);
        }
        let key = (channel.to_owned(), interface.code.clone());
        if permissioned {
            required = required.max(*self.perm_levels.get(&key)?);
        }
        if leveled && let Some(floor) = self.levels.get(&key) {
            required = required.max((*floor)?);
        }
        Some(required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(permissions: serde_json::Value, levels: serde_json::Value) -> Snapshot {
        let interface = |code: &str, path: &str| {
            json!({"code": code, "method": "GET", "path": path, "enabled": true,
                   "requires_client_auth": true, "min_level": 1, "idempotent": true,
                   "timeout_ms": 1000, "target_service": "svc", "balancer": "round_robin",
                   "channels": ["app", "web"]})
        };
        let document = json!({
            "version": 1, "revision": 1,
            "interfaces": [interface("bills", "/bills"), interface("pay", "/pay")],
            "permissions": permissions, "levels": levels,
        });
        Snapshot::from_json(document.to_string().as_bytes()).expect("compiles")
    }

    #[test]
    fn a_level_raises_the_level_on_its_channel_only() {
        let snapshot = snapshot(
            json!([]),
            json!([{"channel": "app", "interface": "bills", "min_level": 2}]),
        );
        let [bills, pay] = [&snapshot.interfaces[0], &snapshot.interfaces[1]];
        assert_eq!(snapshot.required_level("app", bills), Some(2));
        // Not a permission: other channels (and calls without one) keep the interface's.
        assert_eq!(snapshot.required_level("web", bills), Some(1));
        assert_eq!(snapshot.required_level("", bills), Some(1));
        assert_eq!(snapshot.required_level("app", pay), Some(1));
    }

    #[test]
    fn a_null_level_refuses_on_its_channel_and_permissions_still_close() {
        let snapshot = snapshot(
            json!([{"channel": "app", "interface": "pay", "min_level": 0},
                   {"channel": "web", "interface": "pay", "min_level": 0}]),
            json!([{"channel": "app", "interface": "pay", "min_level": null},
                   {"channel": "app", "interface": "bills", "min_level": 0}]),
        );
        let [bills, pay] = [&snapshot.interfaces[0], &snapshot.interfaces[1]];
        assert_eq!(snapshot.required_level("app", pay), None);
        assert_eq!(snapshot.required_level("web", pay), Some(1));
        assert_eq!(snapshot.required_level("other", pay), None); // no permission
        // A level below the interface's never lowers it.
        assert_eq!(snapshot.required_level("app", bills), Some(1));
    }

    fn compile(
        interface: serde_json::Value,
        instance: serde_json::Value,
    ) -> Result<Snapshot, String> {
        let mut base = serde_json::json!({
            "code": "i", "method": "GET", "path": "/x", "enabled": true,
            "requires_client_auth": false, "min_level": 0, "idempotent": true,
            "timeout_ms": 1000, "target_service": "svc", "balancer": "round_robin",
        });
        base.as_object_mut()
            .unwrap()
            .extend(interface.as_object().unwrap().clone());
        let mut one = serde_json::json!({"instance_id": "a", "host": "127.0.0.1", "port": 1});
        one.as_object_mut()
            .unwrap()
            .extend(instance.as_object().unwrap().clone());
        let document = serde_json::json!({
            "version": 1, "revision": 1, "interfaces": [base], "instances": {"svc": [one]},
        });
        Snapshot::from_json(document.to_string().as_bytes())
    }

    #[test]
    fn versions_and_health_paths_default_for_older_documents() {
        let snapshot = compile(serde_json::json!({}), serde_json::json!({})).unwrap();
        assert_eq!(&*snapshot.interfaces[0].version, "1");
        assert!(snapshot.interfaces[0].canary.is_none());
        // No business systems, none granted.
        assert!(snapshot.systems.is_empty() && snapshot.interfaces[0].systems.is_empty());
        let instance = &snapshot.instances["svc"][0];
        assert_eq!(instance.version, None);
        assert_eq!(instance.health_path.as_deref(), Some("/healthz"));
        assert!(instance.serves("1", "1") && !instance.serves("2", "1"));
        let null = compile(
            serde_json::json!({"canary": null}),
            serde_json::json!({"version": null, "health_path": null}),
        )
        .unwrap();
        assert_eq!(
            null.instances["svc"][0].health_path.as_deref(),
            Some("/healthz")
        );
    }

    #[test]
    fn a_canary_and_a_health_path_are_compiled_or_refused_clearly() {
        let snapshot = compile(
            serde_json::json!({"version": "7", "canary": {"version": "8", "percent": 25}}),
            serde_json::json!({"version": "8", "health_path": "status/live"}),
        )
        .unwrap();
        let canary = snapshot.interfaces[0].canary.as_ref().unwrap();
        assert_eq!((&*canary.version, canary.percent), ("8", 25));
        assert_eq!(
            snapshot.instances["svc"][0].health_path.as_deref(),
            Some("/status/live")
        );
        let error = compile(
            serde_json::json!({"canary": {"version": "2", "percent": 101}}),
            serde_json::json!({}),
        )
        .err()
        .unwrap();
        assert!(error.contains("canary percent 101"), "{error}");
        let error = compile(
            serde_json::json!({}),
            serde_json::json!({"health_path": "/a b"}),
        )
        .err()
        .unwrap();
        assert_eq!(
            error,
            "instance a of svc: health_path \"/a b\" is not a URL path"
        );
    }
}
