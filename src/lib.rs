//! Countersign: an authenticating reverse proxy that holds sensitive requests until approvers
//! countersign them.
//!
//! Data flows one way: `proxy` -> `policy` -> `oidc` (-> `approval` -> `chat`/store), with
//! `control` feeding decisions back. `main.rs` only wires services together.
#![deny(missing_debug_implementations)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod app;
pub mod approval;
pub mod audit;
pub mod background;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod devidp;
pub mod devlogin;
pub mod explain;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod oncall;
pub mod policy;
pub mod policytest;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
