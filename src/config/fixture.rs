//! Fixtures shared by the config tests: a minimal valid `countersign.toml`, a temporary folder
//! to load it from, and a policy text compiled against chosen references.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::policy_file::{parse_text, Names};
use super::refs::Refs;
use super::{load, Config};
use crate::policy::{PolicySet, Rule};

/// The `[server]` section of the minimal config.
pub(super) const SERVER: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";

/// The rest of the minimal config: one upstream, a route to it and one issuer.
pub(super) const MINIMAL_REST: &str = r#"
[[upstream]]
name = "api"
url = "http://127.0.0.1:7000"

[[route]]
upstream = "api"

[[issuer]]
issuer = "https://idp.example.com"
audiences = ["aud"]
"#;

/// The minimal config followed by `extra`, which starts on line 14.
pub(super) fn minimal_with(extra: &str) -> String {
    format!("{SERVER}{MINIMAL_REST}{extra}")
}

/// Writes `files` (name, text) into a fresh temporary folder.
pub(super) fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// Loads `countersign.toml` from `dir`; the problems are returned as lines with the folder
/// prefix removed.
pub(super) fn load_folder(dir: &tempfile::TempDir) -> Result<(Config, PolicySet), Vec<String>> {
    let prefix = format!("{}/", dir.path().display());
    load(&dir.path().join("countersign.toml")).map_err(|p| {
        p.0.iter()
            .map(|p| p.to_string().replace(&prefix, ""))
            .collect()
    })
}

/// The references of a config that has the approver `groups` and no integration.
pub(super) fn groups_only(groups: &BTreeMap<String, Vec<String>>) -> Refs<'_> {
    Refs {
        groups,
        slack: false,
        teams: false,
        login: false,
        pagerduty: false,
    }
}

/// Compiles `text` as the policy file `p.toml` against `refs`: (rules, problems as strings).
pub(super) fn compile_policy(text: &str, refs: Refs<'_>) -> (Vec<Rule>, Vec<String>) {
    let (rules, problems) = parse_text(Path::new("p.toml"), text, refs, &mut Names::new());
    (rules, problems.iter().map(ToString::to_string).collect())
}

/// Asserts that there are as many `problems` as `prefixes`, each starting with its prefix.
pub(super) fn assert_starts_with(problems: &[String], prefixes: &[&str]) {
    assert_eq!(problems.len(), prefixes.len(), "{problems:?}");
    for (problem, prefix) in problems.iter().zip(prefixes) {
        assert!(problem.starts_with(prefix), "{problems:?}");
    }
}
