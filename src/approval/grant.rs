//! Grants (SPEC 9, `grant = "15m"`, `grant_uses = 5`): the record and its pure rules. An
//! approved request whose approvers asked for a grant lets the same requester's later requests
//! that match the same rule, method, host and path pass for a while and a number of uses.
//!
//! Owns the grant record, its lookup key and whether it may be used now. Must not touch a
//! store, the clock, pingora, axum or HTML; stores count uses atomically on top of [`use_grant`].

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::record::{Approval, Decision, Requester, Status};

/// Default `grant_uses` when a rule sets `grant` without it: one reuse only (conservative).
pub const DEFAULT_USES: u32 = 1;

/// A grant: created by an approving decision, used by matching requests until it expires, is
/// used up or is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `gr_` + 32 hex characters (random).
    pub id: String,
    /// The rule it was granted on.
    pub rule: String,
    /// Whose requests it lets through.
    pub requester: Requester,
    /// The canonical method, host and path it covers (those of the approved request).
    pub method: String,
    /// Canonical host.
    pub host: String,
    /// Canonical path (no query).
    pub path: String,
    /// The approval that created it.
    pub approval_id: String,
    /// Who approved it (lowercase emails).
    pub approvers: Vec<String>,
    /// Who may see and revoke it besides the requester: every approver of the approval that
    /// made it (fixed then, like the approval's own approvers).
    #[serde(default)]
    pub approvers_of_rule: Vec<String>,
    /// Created, unix ms.
    pub created_at: u64,
    /// Stops matching at, unix ms.
    pub expires_at: u64,
    /// Uses allowed in all.
    pub uses_max: u32,
    /// Uses so far (cluster-wide in a shared store).
    pub uses: u32,
    /// Revoked by whom, if so.
    #[serde(default)]
    pub revoked_by: Option<String>,
}

impl Grant {
    /// A new grant id: `gr_` and 128 random bits in hex.
    pub fn generate_id() -> String {
        let bytes: [u8; 16] = rand::random();
        format!("gr_{}", hex::encode(bytes))
    }

    /// The id of the grant made by approval `approval_id`: derived, so the approval's page and
    /// API name it without a second write, and making it twice (a retry) makes one grant.
    pub fn id_for(approval_id: &str) -> String {
        let digest = sha2::Sha256::digest(format!("countersign grant:{approval_id}").as_bytes());
        format!("gr_{}", hex::encode(&digest[..16]))
    }

    /// Whether `email` (lowercase) or the caller `iss`/`sub` may see and revoke this grant:
    /// its requester, and the approvers of the approval that made it.
    pub fn visible_to(&self, email: Option<&str>, iss: &str, sub: &str) -> bool {
        self.requester.is(iss, sub)
            || email.is_some_and(|e| {
                self.approvers_of_rule.iter().any(|a| a == e)
                    || self.approvers.iter().any(|a| a == e)
            })
    }

    /// Whether the grant still lets requests through at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.revoked_by.is_none() && now < self.expires_at && self.uses < self.uses_max
    }

    /// The lookup key of this grant (see [`lookup_key`]).
    pub fn key(&self) -> String {
        lookup_key(
            &self.requester,
            &self.rule,
            &self.method,
            &self.host,
            &self.path,
        )
    }
}

/// The key under which grants for (requester iss+sub, rule, method, host, path) are found:
/// every part length-prefixed so no two tuples collide, hashed to a fixed size. The email is
/// not part of it (identity is iss+sub).
pub fn lookup_key(
    requester: &Requester,
    rule: &str,
    method: &str,
    host: &str,
    path: &str,
) -> String {
    let mut h = sha2::Sha256::new();
    for part in [
        requester.iss.as_str(),
        requester.sub.as_str(),
        rule,
        method,
        host,
        path,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Whether approval `a` makes a grant: its rule offers grants, it is approved (by votes, not
/// itself under a grant), and every approving vote asked for one ("Approve for 15 min"). With
/// a quorum above one, one approver cannot widen what the others approved once.
pub fn offered_by(a: &Approval) -> bool {
    let mut approving = a.votes.iter().filter(|v| v.decision == Decision::Approve);
    a.grant_offer.is_some()
        && a.granted.is_none()
        && a.status == Status::Approved
        && approving.clone().next().is_some()
        && approving.all(|v| v.grant)
}

/// The grant approval `a` makes at `now` ([`offered_by`]), or `None`.
pub fn from_approval(a: &Approval, now: u64) -> Option<Grant> {
    if !offered_by(a) {
        return None;
    }
    let offer = a.grant_offer?;
    Some(Grant {
        id: Grant::id_for(a.id.as_str()),
        rule: a.rule.clone(),
        requester: a.requester.clone(),
        method: a.method.clone(),
        host: a.host.clone(),
        path: a.path.clone(),
        approval_id: a.id.to_string(),
        approvers: a.approved_by(),
        approvers_of_rule: a.approvers.clone(),
        created_at: now,
        expires_at: now.saturating_add(offer.ttl_ms),
        uses_max: offer.uses,
        uses: 0,
        revoked_by: None,
    })
}

/// What trying to use a grant found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    /// One use was taken; the request may pass.
    Used,
    /// Expired, used up or revoked: the request is held as usual.
    NotLive,
}

/// Takes one use of `grant` at `now` if it is live (the store applies this under its
/// compare-and-set or in its script, so uses are never over-counted).
pub fn use_grant(grant: &mut Grant, now: u64) -> UseOutcome {
    if !grant.is_live(now) {
        return UseOutcome::NotLive;
    }
    grant.uses += 1;
    UseOutcome::Used
}

/// A grant for tests: requester `https://idp`/`alice`, rule `r`, `POST api /x`, no uses yet.
#[cfg(test)]
pub(crate) fn fixture(uses_max: u32, expires_at: u64) -> Grant {
    Grant {
        id: Grant::generate_id(),
        rule: "r".into(),
        requester: Requester {
            iss: "https://idp".into(),
            sub: "alice".into(),
            email: None,
        },
        method: "POST".into(),
        host: "api".into(),
        path: "/x".into(),
        approval_id: "a".into(),
        approvers: vec!["bob@example.com".into()],
        approvers_of_rule: vec!["bob@example.com".into(), "carol@example.com".into()],
        created_at: 0,
        expires_at,
        uses_max,
        uses: 0,
        revoked_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requester(sub: &str) -> Requester {
        Requester {
            iss: "https://idp".into(),
            sub: sub.into(),
            email: None,
        }
    }

    #[test]
    fn uses_are_counted_and_stop_at_the_limit() {
        let mut g = fixture(2, 1000);
        assert_eq!(use_grant(&mut g, 1), UseOutcome::Used);
        assert_eq!(use_grant(&mut g, 2), UseOutcome::Used);
        assert_eq!(use_grant(&mut g, 3), UseOutcome::NotLive);
        assert_eq!(g.uses, 2);
    }

    #[test]
    fn expired_or_revoked_grants_do_not_match() {
        let mut g = fixture(2, 1000);
        assert_eq!(use_grant(&mut g, 1000), UseOutcome::NotLive);
        let mut g = fixture(2, 1000);
        g.revoked_by = Some("bob@example.com".into());
        assert_eq!(use_grant(&mut g, 1), UseOutcome::NotLive);
        assert_eq!(g.uses, 0);
    }

    #[test]
    fn keys_separate_requesters_rules_methods_hosts_and_paths() {
        let a = requester("alice");
        let k = lookup_key(&a, "r", "POST", "api", "/x");
        assert_eq!(k, fixture(2, 1000).key());
        assert_ne!(
            k,
            lookup_key(&requester("mallory"), "r", "POST", "api", "/x")
        );
        assert_ne!(k, lookup_key(&a, "r2", "POST", "api", "/x"));
        assert_ne!(k, lookup_key(&a, "r", "GET", "api", "/x"));
        assert_ne!(k, lookup_key(&a, "r", "POST", "api2", "/x"));
        assert_ne!(k, lookup_key(&a, "r", "POST", "api", "/y"));
        // Length prefixes: shifting a boundary changes the key.
        let b = Requester {
            iss: "https://idpa".into(),
            sub: "lice".into(),
            email: None,
        };
        assert_ne!(k, lookup_key(&b, "r", "POST", "api", "/x"));
    }
}
