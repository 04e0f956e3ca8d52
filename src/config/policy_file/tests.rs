//! `mode = "enforce" | "shadow"` in a policy file: the default, both values, and every wrong
//! value reported at its own file:line:col.

use std::collections::BTreeMap;

use crate::config::fixture::{assert_starts_with, compile_policy, groups_only};
use crate::policy::Mode;

/// Compiles `text` as `p.toml`: (modes of the rules compiled, problems as strings).
fn compile(text: &str) -> (Vec<Mode>, Vec<String>) {
    let (rules, problems) = compile_policy(text, groups_only(&BTreeMap::new()));
    (rules.iter().map(|r| r.mode).collect(), problems)
}

#[test]
fn mode_defaults_to_enforce_and_accepts_shadow() {
    let text = r#"[[rule]]
name = "a"
action = "deny"

[[rule]]
name = "b"
action = "deny"
mode = "shadow"

[[rule]]
name = "c"
action = "allow"
mode = "enforce"
"#;
    assert_eq!(
        compile(text),
        (vec![Mode::Enforce, Mode::Shadow, Mode::Enforce], vec![])
    );
}

#[test]
fn a_wrong_mode_is_an_error_at_its_value() {
    let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\nmode = \"shadwo\"\n";
    assert_eq!(
        compile(text),
        (
            vec![],
            vec![
                "p.toml:4:8: \"mode\" must be \"enforce\" or \"shadow\", not \"shadwo\"; did you mean \"shadow\"?".to_owned()
            ]
        )
    );
    let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\nmode = \"audit\"\n";
    assert_eq!(
        compile(text).1,
        ["p.toml:4:8: \"mode\" must be \"enforce\" or \"shadow\", not \"audit\""]
    );
    let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\nmode = true\n";
    let (modes, problems) = compile(text);
    assert!(modes.is_empty());
    assert_starts_with(&problems, &["p.toml:4:8: "]);
    // Modes are lowercase words, like actions.
    let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\nmode = \"Shadow\"\n";
    assert!(compile(text).1[0].starts_with("p.toml:4:8: \"mode\" must be"));
}

#[test]
fn a_misspelt_mode_key_is_an_unknown_key() {
    let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\nmdoe = \"shadow\"\n";
    let (_, problems) = compile(text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("p.toml:4:1: ") && problems[0].contains("\"mode\""),
        "{problems:?}"
    );
}
