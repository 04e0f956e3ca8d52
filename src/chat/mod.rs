//! Chat delivery: Slack and Microsoft Teams.

pub mod slack;
pub mod teams;
