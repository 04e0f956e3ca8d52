//! Chat delivery: Slack and Microsoft Teams.

pub mod fanout;
pub mod slack;
pub mod teams;
pub mod teams_bot;
