//! Permission: interface permissions and levels (gateway/stages.py ``Permission``), and the
//! bearer-token stage before it (``UserAuth``).

use crate::errors::GatewayError;
use crate::exchange::Exchange;
use crate::snapshot::Snapshot;
use crate::user_auth::{TokenCache, TokenPolicy};

/// Verify a presented token; interfaces above level 0 need one.
pub fn user_auth(
    exchange: &mut Exchange<'_>,
    snapshot: &Snapshot,
    tokens: &TokenCache,
    policy: &TokenPolicy,
    now_unix: f64,
) -> Result<(), GatewayError> {
    let interface = exchange.interface.expect("route runs first");
    let Some(header) = exchange.headers.get("authorization") else {
        if interface.min_level > 0 {
            return Err(GatewayError::AuthRequired(
                "this interface needs a signed-in customer".into(),
            ));
        }
        return Ok(());
    };
    let text = header.to_str().unwrap_or("");
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(GatewayError::AuthRequired(
            "use Authorization: Bearer <access_token>".into(),
        ));
    }
    let claims = tokens.verify(token, &snapshot.keys, &snapshot.revoked, policy, now_unix)?;
    if let Some(channel) = exchange.channel
        && claims.channel != channel.code
    {
        return Err(GatewayError::PermissionDenied(
            "the token was issued to another channel".into(),
        ));
    }
    exchange.claims = Some(claims);
    Ok(())
}

/// The channel must be allowed to call the interface, and the account's level must reach
/// what the interface and the channel's permission ask for.
pub fn check(exchange: &Exchange<'_>, snapshot: &Snapshot) -> Result<(), GatewayError> {
    let interface = exchange.interface.expect("route runs first");
    let channel = exchange.channel.map_or("", |c| c.code.as_str());
    let Some(required) = snapshot.required_level(channel, interface) else {
        return Err(GatewayError::PermissionDenied(
            "this channel has no permission for this interface".into(),
        ));
    };
    // The token's level is the one it was issued at (stages.py ``_stale_token_detail``).
    let detail = match exchange.claims.as_ref() {
        None if required > 0 => {
            format!("this needs account level {required}: send a signed-in customer's token")
        }
        Some(claims) if claims.level < required => format!(
            "this needs account level {required}; the token was issued at level {}. If the \
             account has since bound a 户号 or passed real-name verification, refresh the token \
             (POST /api/v1/auth/token, grant_type refresh_token) and try again",
            claims.level
        ),
        _ => return Ok(()),
    };
    Err(GatewayError::LevelRequired {
        detail,
        required_level: required,
    })
}
