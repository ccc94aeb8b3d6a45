//! Scope: a request that names a 户号 must name one the caller has bound (R11 data control;
//! gateway/stages.py ``DataScope``), from a path parameter or the JSON body's top level.

use serde_json::Value;

use crate::errors::GatewayError;
use crate::exchange::Exchange;
use crate::snapshot::Scope;

/// Python's ``str()`` of a JSON value, for the values a 户号 can be.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// Answer ``perm.not_bound`` for someone else's 户号.
pub fn check(exchange: &Exchange<'_>) -> Result<(), GatewayError> {
    let interface = exchange.interface.expect("route runs first");
    let value: Option<String> = match &interface.scope {
        None => return Ok(()),
        Some(Scope::Path(name)) => exchange.param(name).map(str::to_owned),
        Some(Scope::Body(name)) => {
            if exchange.body.is_empty() {
                None
            } else {
                let document: Value = serde_json::from_slice(&exchange.body)
                    .map_err(|_| GatewayError::Invalid("the body is not valid JSON".into()))?;
                match document.get(name.as_str()) {
                    None | Some(Value::Null) => None,
                    Some(found) if document.is_object() => Some(as_text(found)),
                    Some(_) => None,
                }
            }
        }
    };
    let Some(value) = value else {
        return Ok(()); // nothing named: nothing of anyone's to protect
    };
    match &exchange.claims {
        Some(claims) if claims.customer_nos.contains(&value) => Ok(()),
        _ => Err(GatewayError::NotBound(
            "this 户号 is not bound to your account (bind it, then sign in again)".into(),
        )),
    }
}
