//! gridgate's data plane: the gateway's request path compiled (issue 13).
//!
//! Python compiles policy into a snapshot document; the engine serves every request from
//! that snapshot on its own tokio runtime. One module per stage of the request path:
//! [`route`], [`channel_auth`], [`user_auth`] and [`permission`], [`scope`], [`flow`],
//! [`dispatch`], [`fields`], [`access_log`]; [`proxy`] runs them in order and
//! [`engine`] serves them over HTTP.

pub mod access_log;
pub mod balancers;
pub mod canary;
pub mod channel_auth;
pub mod connections;
pub mod dispatch;
pub mod engine;
pub mod errors;
pub mod exchange;
pub mod fields;
pub mod flow;
pub mod health;
pub mod http1;
pub mod internal_auth;
pub mod metrics;
pub mod nonces;
pub mod outlier;
pub mod permission;
pub mod pii;
pub mod proxy;
pub mod redis_store;
pub mod route;
pub mod scope;
pub mod signing;
pub mod snapshot;
pub mod user_auth;

#[cfg(feature = "python")]
mod python;

pub use engine::{Config, Engine};

// The request path allocates small buffers per request; glibc's malloc cost a sixth of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod http1_tests;
#[cfg(test)]
mod redis_tests;
