//! Domain errors of the request path and their problem+json answers (src/gridgate/errors.py).
//!
//! Each variant carries the data its answer needs; [`GatewayError::code`], `status` and
//! `title` are the API contract (docs/api.md, "Errors") and must stay equal to Python's.

use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// What ended a request early, with the detail shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    Internal,
    NotFound(String),
    MethodNotAllowed(String),
    TooLarge(String),
    Malformed(String),
    HeadersTooLarge(String),
    RequestTimeout(String),
    Invalid(String),
    NotReady(String),
    ChannelUnknown(String),
    ChannelBadSignature(String),
    ChannelExpired(String),
    ChannelReplayed(String),
    ChannelIpDenied(String),
    ChannelNotAuthorized(String),
    AuthRequired(String),
    InvalidToken(String),
    PermissionDenied(String),
    LevelRequired {
        detail: String,
        required_level: u8,
    },
    NotBound(String),
    RateLimited {
        detail: String,
        retry_after: u64,
    },
    Overloaded {
        detail: String,
        retry_after: u64,
    },
    UpstreamUnavailable(String),
    UpstreamTimeout(String),
    UpstreamBadResponse(String),
    /// A shared store (Redis) did not answer: nonces and rate windows cannot be checked.
    StoreUnavailable(String),
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    /// ``null`` in the answers written before a request is read (web/connections.py).
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    required_level: Option<u8>,
}

impl GatewayError {
    /// The stable error code of api.md.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Internal => "internal",
            NotFound(_) => "not_found",
            MethodNotAllowed(_) => "request.method_not_allowed",
            TooLarge(_) => "request.too_large",
            Malformed(_) => "request.malformed",
            HeadersTooLarge(_) => "request.headers_too_large",
            RequestTimeout(_) => "request.timeout",
            Invalid(_) => "request.invalid",
            NotReady(_) => "service.starting",
            ChannelUnknown(_) => "channel.unknown",
            ChannelBadSignature(_) => "channel.bad_signature",
            ChannelExpired(_) => "channel.expired",
            ChannelReplayed(_) => "channel.replayed",
            ChannelIpDenied(_) => "channel.ip_denied",
            ChannelNotAuthorized(_) => "channel.not_authorized",
            AuthRequired(_) => "auth.required",
            InvalidToken(_) => "auth.invalid_token",
            PermissionDenied(_) => "perm.denied",
            LevelRequired { .. } => "perm.level_required",
            NotBound(_) => "perm.not_bound",
            RateLimited { .. } => "flow.rate_limited",
            Overloaded { .. } => "flow.overloaded",
            UpstreamUnavailable(_) => "upstream.unavailable",
            UpstreamTimeout(_) => "upstream.timeout",
            UpstreamBadResponse(_) => "upstream.bad_response",
            StoreUnavailable(_) => "service.unavailable",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            Internal => 500,
            NotFound(_) => 404,
            MethodNotAllowed(_) => 405,
            TooLarge(_) => 413,
            Malformed(_) => 400,
            HeadersTooLarge(_) => 431,
            RequestTimeout(_) => 408,
            Invalid(_) => 422,
            NotReady(_) | Overloaded { .. } | UpstreamUnavailable(_) | StoreUnavailable(_) => 503,
            ChannelUnknown(_) | ChannelBadSignature(_) | ChannelExpired(_) | ChannelReplayed(_) => {
                401
            }
            ChannelIpDenied(_) | ChannelNotAuthorized(_) => 403,
            AuthRequired(_) | InvalidToken(_) => 401,
            PermissionDenied(_) | LevelRequired { .. } | NotBound(_) => 403,
            RateLimited { .. } => 429,
            UpstreamTimeout(_) => 504,
            UpstreamBadResponse(_) => 502,
        }
    }

    /// The problem's title (errors.py's class ``title``).
    pub fn title(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Internal => "Internal error",
            NotFound(_) => "Not found",
            MethodNotAllowed(_) => "Method not allowed",
            TooLarge(_) => "Request body too large",
            Malformed(_) => "Malformed request",
            HeadersTooLarge(_) => "Request headers too large",
            RequestTimeout(_) => "Request not received in time",
            Invalid(_) => "Invalid request",
            NotReady(_) => "Starting",
            ChannelUnknown(_) => "Unsigned request or unknown channel",
            ChannelBadSignature(_) => "Bad signature",
            ChannelExpired(_) => "Request expired",
            ChannelReplayed(_) => "Request replayed",
            ChannelIpDenied(_) => "Address not allowed for this channel",
            ChannelNotAuthorized(_) => "Channel not authorized for this interface",
            AuthRequired(_) => "Authentication required",
            InvalidToken(_) => "Invalid or expired token",
            PermissionDenied(_) => "Permission denied",
            LevelRequired { .. } => "Higher account level required",
            NotBound(_) => "户号 not bound to this account",
            RateLimited { .. } => "Too many requests",
            Overloaded { .. } => "Overloaded",
            UpstreamUnavailable(_) => "Business system unavailable",
            UpstreamTimeout(_) => "Business system timed out",
            UpstreamBadResponse(_) => "Bad answer from business system",
            StoreUnavailable(_) => "Service unavailable",
        }
    }

    /// The detail shown to the caller (the title when there is none).
    pub fn detail(&self) -> &str {
        use GatewayError::*;
        match self {
            Internal => self.title(),
            NotFound(d)
            | MethodNotAllowed(d)
            | TooLarge(d)
            | Malformed(d)
            | HeadersTooLarge(d)
            | RequestTimeout(d)
            | Invalid(d)
            | NotReady(d)
            | ChannelUnknown(d)
            | ChannelBadSignature(d)
            | ChannelExpired(d)
            | ChannelReplayed(d)
            | ChannelIpDenied(d)
            | ChannelNotAuthorized(d)
            | AuthRequired(d)
            | InvalidToken(d)
            | PermissionDenied(d)
            | NotBound(d)
            | UpstreamUnavailable(d)
            | UpstreamTimeout(d)
            | UpstreamBadResponse(d)
            | StoreUnavailable(d) => d,
            LevelRequired { detail, .. }
            | RateLimited { detail, .. }
            | Overloaded { detail, .. } => detail,
        }
    }

    /// Seconds to wait before trying again, for the errors that say so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::Overloaded { retry_after, .. } => Some(*retry_after),
            GatewayError::NotReady(_) | GatewayError::StoreUnavailable(_) => Some(1),
            _ => None,
        }
    }

    /// Extra answer headers (``Retry-After``, ``WWW-Authenticate``).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if matches!(
            self,
            GatewayError::AuthRequired(_) | GatewayError::InvalidToken(_)
        ) {
            headers.push(("www-authenticate", "Bearer".to_owned()));
        }
        if let Some(seconds) = self.retry_after() {
            headers.push(("retry-after", seconds.to_string()));
        }
        headers
    }

    /// The problem+json document, as errors.py's ``problem_body`` writes it.
    pub fn body(&self, trace_id: &str) -> Vec<u8> {
        self.body_traced(Some(trace_id))
    }

    /// The problem+json document with ``trace_id`` ``null`` when there is none.
    pub fn body_traced(&self, trace_id: Option<&str>) -> Vec<u8> {
        let body = ProblemBody {
            kind: format!("urn:gridgate:error:{}", self.code()),
            title: self.title(),
            status: self.status(),
            detail: self.detail(),
            code: self.code(),
            trace_id,
            retry_after: self.retry_after(),
            required_level: match self {
                GatewayError::LevelRequired { required_level, .. } => Some(*required_level),
                _ => None,
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_matches_python_key_order_and_extras() {
        let error = GatewayError::LevelRequired {
            detail: "this needs account level 1".into(),
            required_level: 1,
        };
        let body = String::from_utf8(error.body("ab")).unwrap();
        assert_eq!(
            body,
            r#"{"type":"urn:gridgate:error:perm.level_required","title":"Higher account level required","status":403,"detail":"this needs account level 1","code":"perm.level_required","trace_id":"ab","required_level":1}"#
        );
        let limited = GatewayError::RateLimited {
            detail: "x".into(),
            retry_after: 2,
        };
        assert_eq!(limited.status(), 429);
        assert!(limited.headers().contains(&("retry-after", "2".to_owned())));
        assert!(
            String::from_utf8(limited.body("t"))
                .unwrap()
                .ends_with(r#""retry_after":2}"#)
        );
    }
}
