//! Slack (another branch).
