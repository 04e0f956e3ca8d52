//! How some record fields are written as JSON (bytes as base64, the policy's approve-via and
//! notify targets as their config strings), shared by the record types. Owns field encodings
//! only; must not hold any type of its own.

/// Base64 (standard, padded) for byte fields in JSON.
pub(crate) mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// `ApproveVia` as `"button"` / `"login"` (the policy type has no serde of its own).
pub(crate) mod approve_via_serde {
    use crate::notify::ApproveVia;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &ApproveVia, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match v {
            ApproveVia::Button => "button",
            ApproveVia::Login => "login",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ApproveVia, D::Error> {
        match String::deserialize(d)?.as_str() {
            "button" => Ok(ApproveVia::Button),
            "login" => Ok(ApproveVia::Login),
            other => Err(serde::de::Error::custom(format!("approve_via {other:?}"))),
        }
    }
}

/// `NotifyTarget`s as tagged JSON (`{"slack_channel": ".."}`, `"teams"`), lossless.
pub(crate) mod notify_serde {
    use crate::notify::NotifyTarget;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mirror {
        SlackChannel(String),
        SlackUser(String),
        Teams,
    }

    pub fn serialize<S: Serializer>(v: &[NotifyTarget], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| match t {
            NotifyTarget::SlackChannel(c) => Mirror::SlackChannel(c.clone()),
            NotifyTarget::SlackUser(u) => Mirror::SlackUser(u.clone()),
            NotifyTarget::Teams => Mirror::Teams,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NotifyTarget>, D::Error> {
        Ok(Vec::<Mirror>::deserialize(d)?
            .into_iter()
            .map(|m| match m {
                Mirror::SlackChannel(c) => NotifyTarget::SlackChannel(c),
                Mirror::SlackUser(u) => NotifyTarget::SlackUser(u),
                Mirror::Teams => NotifyTarget::Teams,
            })
            .collect())
    }
}
