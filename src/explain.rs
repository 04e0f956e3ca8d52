//! placeholder: implemented on the config branch
use crate::config::Config;
use crate::identity::Principal;
use crate::policy::PolicySet;
/// Explains a request.
pub fn explain(
    config: &Config,
    policy: &PolicySet,
    method: &str,
    url: &str,
    who: Option<&Principal>,
    now: u64,
) -> Result<String, String> {
    let _ = (config, policy, method, url, who, now);
    todo!()
}
