//! Channel auth (docs/api.md "Channel request signing", gateway/stages.py ``ChannelAuth``):
//! signature, clock window, IP allow-list, single-use nonce, channel authorized for the
//! interface — in that order, the first failure answers. A business system signs the same
//! way under ``X-GG-System`` with its password (api.md "System-to-system calls"): the same
//! checks but the allow-list, then the interface must grant it.

use std::time::Instant;

use crate::errors::GatewayError;
use crate::exchange::Exchange;
use crate::nonces::{NonceRefusal, NonceStore};
use crate::signing::{MacKey, WINDOW_S, verified_query_with};
use crate::snapshot::{Channel, Interface, Snapshot, System};

/// The request-signing headers (api.md "Channel request signing").
const SIGNING_HEADERS: [&str; 4] = [
    "x-gg-channel",
    "x-gg-timestamp",
    "x-gg-nonce",
    "x-gg-signature",
];
/// The detail of a request without any signing header (stages.py ``_UNSIGNED``).
pub const UNSIGNED: &str = "the request is not signed: send X-GG-Channel, X-GG-Timestamp, \
     X-GG-Nonce and X-GG-Signature (docs/api.md, Channel request signing)";

fn timestamp_ok(text: &str) -> bool {
    (1..=20).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

fn nonce_ok(text: &str) -> bool {
    (16..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where the single-use nonce is checked.
pub enum NonceCheck<'a> {
    /// In process, here and now.
    Local(&'a NonceStore),
    /// Later, in Redis with the request's rate windows (one round trip): the (channel,
    /// nonce) to spend is left here once the request got that far.
    Deferred(&'a mut Option<(String, String)>),
}

/// Who signed a request: a channel, or a business system calling in its own name.
#[derive(Clone, Copy)]
enum Signer<'s> {
    Channel(&'s Channel),
    System(&'s System),
}

impl Signer<'_> {
    fn key(&self) -> &MacKey {
        match self {
            Signer::Channel(channel) => &channel.key,
            Signer::System(system) => &system.key,
        }
    }

    /// Whose nonces these are: a channel's code, a system's ``system:<code>`` (catalog codes
    /// have no ``:``, so the two never share nonces).
    fn nonce_owner(&self) -> &str {
        match self {
            Signer::Channel(channel) => &channel.code,
            Signer::System(system) => &system.label,
        }
    }
}

/// Authenticate the caller if the interface asks for it or ``X-GG-Channel`` (a channel) or
/// ``X-GG-System`` (a business system, api.md "System-to-system calls") is sent.
pub fn check<'s>(
    exchange: &mut Exchange<'s>,
    snapshot: &'s Snapshot,
    nonces: NonceCheck<'_>,
    now_unix: f64,
) -> Result<(), GatewayError> {
    let interface = exchange.interface.expect("route runs first");
    let signer = match (
        exchange.headers.get("x-gg-channel"),
        exchange.headers.get("x-gg-system"),
    ) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::ChannelUnknown(
                "send X-GG-Channel or X-GG-System, not both".into(),
            ));
        }
        (None, Some(value)) => match snapshot.systems.get(value.to_str().unwrap_or("")) {
            Some(system) => Signer::System(system),
            None => {
                return Err(GatewayError::ChannelUnknown(
                    "unknown business system (X-GG-System)".into(),
                ));
            }
        },
        (Some(value), None) => match snapshot.channels.get(value.to_str().unwrap_or("")) {
            Some(channel) if channel.enabled => Signer::Channel(channel),
            _ => {
                return Err(GatewayError::ChannelUnknown(
                    "unknown or disabled channel (X-GG-Channel)".into(),
                ));
            }
        },
        (None, None) if !interface.requires_client_auth => return Ok(()),
        // Not a wrong channel: no signature at all (a client that never signs, a probe).
        (None, None)
            if !SIGNING_HEADERS
                .iter()
                .any(|name| exchange.headers.contains_key(*name)) =>
        {
            return Err(GatewayError::ChannelUnknown(UNSIGNED.into()));
        }
        (None, None) => {
            return Err(GatewayError::ChannelUnknown(
                "X-GG-Channel is missing from a signed request".into(),
            ));
        }
    };
    let timestamp = exchange.header("x-gg-timestamp").unwrap_or("");
    let nonce = exchange.header("x-gg-nonce").unwrap_or("");
    let signature = exchange
        .headers
        .get("x-gg-signature")
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    if !timestamp_ok(timestamp) || !nonce_ok(nonce) || signature.is_empty() {
        return Err(GatewayError::ChannelBadSignature(
            "X-GG-Timestamp, X-GG-Nonce and X-GG-Signature are required".into(),
        ));
    }
    let canonical = verified_query_with(
        signer.key(),
        signature,
        exchange.method.as_str(),
        exchange.path.as_bytes(),
        exchange.raw_query.as_bytes(),
        timestamp,
        nonce.as_bytes(),
        &exchange.body,
    )
    .ok_or_else(|| {
        GatewayError::ChannelBadSignature("the signature does not match the request".into())
    })?;
    let sent: f64 = timestamp
        .parse::<u128>()
        .map(|t| t as f64)
        .unwrap_or(f64::INFINITY);
    let nonce = nonce.to_owned();
    // What the business system reads is what was signed.
    exchange.query_out = canonical;
    if (now_unix - sent).abs() > WINDOW_S as f64 {
        return Err(GatewayError::ChannelExpired(format!(
            "the timestamp is more than {WINDOW_S} s from the gateway's clock"
        )));
    }
    if let Signer::Channel(channel) = signer
        && !channel.allows(&exchange.client_ip)
    {
        return Err(GatewayError::ChannelIpDenied(
            "this address may not call as this channel".into(),
        ));
    }
    // After the signature: only the signer itself can spend its nonces.
    let nonces = match nonces {
        NonceCheck::Local(nonces) => nonces,
        NonceCheck::Deferred(pending) => {
            *pending = Some((signer.nonce_owner().to_owned(), nonce));
            return authorized(exchange, signer, interface);
        }
    };
    match nonces.first_use(signer.nonce_owner(), &nonce, Instant::now()) {
        Ok(()) => {}
        Err(NonceRefusal::Replayed) => {
            return Err(GatewayError::ChannelReplayed(
                "this nonce was already used".into(),
            ));
        }
        Err(NonceRefusal::Full { retry_after }) => {
            return Err(GatewayError::Overloaded {
                detail: "the gateway remembers too many nonces; try again shortly".into(),
                retry_after,
            });
        }
    }
    authorized(exchange, signer, interface)
}

/// The interface must authorize the channel, or grant the business system.
fn authorized<'s>(
    exchange: &mut Exchange<'s>,
    signer: Signer<'s>,
    interface: &Interface,
) -> Result<(), GatewayError> {
    match signer {
        Signer::Channel(channel) => {
            if !interface.channels.contains(&channel.code) {
                return Err(GatewayError::ChannelNotAuthorized(format!(
                    "channel '{}' may not call this interface",
                    channel.code
                )));
            }
            exchange.channel = Some(channel);
        }
        Signer::System(system) => {
            if !interface.systems.contains(&system.code) {
                return Err(GatewayError::PermissionDenied(format!(
                    "business system '{}' is not authorized for this interface",
                    system.code
                )));
            }
            exchange.system = Some(system);
        }
    }
    Ok(())
}
