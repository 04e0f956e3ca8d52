//! Chat delivery: Slack and Microsoft Teams.

pub mod fanout;
pub mod slack;
pub mod teams;
