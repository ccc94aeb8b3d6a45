//! One request on its way through the stages, and what they learned about it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::snapshot::{Channel, Interface, System};
use crate::user_auth::Claims;

/// The request and the stages' findings (gateway/stages.py ``Exchange``).
pub struct Exchange<'s> {
    pub method: Method,
    /// The raw path as sent (percent-encoding included), without the query.
    pub path: String,
    /// The query as sent, without ``?``.
    pub raw_query: String,
    /// What is forwarded: the canonical query once the channel is authenticated.
    pub query_out: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client_ip: String,
    pub trace_id: String,
    pub started: Instant,
    pub interface: Option<&'s Interface>,
    pub params: Vec<(&'s str, String)>,
    pub channel: Option<&'s Channel>,
    /// A business system calling in its own name (``X-GG-System``) instead of a channel.
    pub system: Option<&'s System>,
    pub claims: Option<Arc<Claims>>,
    pub queue_wait: Duration,
    pub upstream: Option<String>,
}

impl Exchange<'_> {
    /// A header's value as text (None when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Who signed the request, as the access record and the metrics name it: the channel's
    /// code, or ``system:<code>`` for a business system.
    pub fn caller(&self) -> Option<&str> {
        match (self.channel, self.system) {
            (Some(channel), _) => Some(&channel.code),
            (None, Some(system)) => Some(&system.label),
            (None, None) => None,
        }
    }

    /// A path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}
