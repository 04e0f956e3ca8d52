//! How approvers are reached and how they decide: plain data that the policy parses, the
//! approval record keeps and the chat channels deliver to. Lives apart from all three so chat
//! needs nothing from the policy.
//!
//! Owns these two value types only. Must not parse, deliver or decide anything.

/// Where approvers are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// `slack:#channel`.
    SlackChannel(String),
    /// `slack:@person@example.com` (a DM).
    SlackUser(String),
    /// `teams`.
    Teams,
}

/// How approvers decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveVia {
    /// One click in chat.
    Button,
    /// Web page with a fresh OIDC login.
    Login,
}
