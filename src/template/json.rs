//! JSON templates (`config.json.template`) insert values raw, because some images pass JSON
//! fragments on purpose (`$ADDTL_MOUNTS`). A placeholder *inside* a JSON string is different: a
//! value there must stay string content, or `--set` could inject keys and array elements.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use super::substitute::{Piece, Pieces};

/// The variables whose placeholders sit inside a JSON string literal of `text`.
///
/// Values inside strings are checked to hold no quote or backslash, so they change nothing of
/// the scan but one thing: a value right after a backslash is escaped by it, and takes the
/// escape away from the text that follows. An empty value leaves the escape there. Both are
/// followed, and a placeholder inside a string in either counts.
pub fn variables_in_json_strings(text: &str) -> Result<BTreeSet<String>> {
    // The states the scan may be in: (inside a string, right after a backslash).
    let mut states = BTreeSet::from([(false, false)]);
    let mut names = BTreeSet::new();
    for piece in Pieces::new(text) {
        match piece? {
            Piece::Text(literal) => {
                for c in literal.chars() {
                    states = states.into_iter().map(|state| scan(state, c)).collect();
                }
            }
            Piece::Variable(name) => {
                if states.iter().any(|&(inside, _)| inside) {
                    names.insert(name.to_string());
                }
                if states.contains(&(true, true)) {
                    states.insert((true, false));
                }
            }
        }
    }
    Ok(names)
}

/// The scan state after `c`.
fn scan((inside, escaped): (bool, bool), c: char) -> (bool, bool) {
    match (inside, escaped, c) {
        (true, true, _) => (true, false),
        (true, false, '\\') => (true, true),
        (_, _, '"') => (!inside, false),
        _ => (inside, escaped),
    }
}

/// Refuses user values that would end or corrupt the JSON string they are substituted into.
pub fn check_json_string_values(file_name: &str, text: &str, user_values: &BTreeMap<String, String>) -> Result<()> {
    for name in variables_in_json_strings(text)? {
        let Some(value) = user_values.get(&name) else { continue };
        if value.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            bail!(
                "--set {name}=...: the value is placed inside a JSON string in '{file_name}', where quotes, \
                 backslashes and control characters would change the structure of config.json"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{"env": ["RECEIVER=$RECEIVER", "Q=\"${QUOTED}\""], "hostname": "$NAME",
        "mounts": [{"destination": "/x"} $ADDTL_MOUNTS], "n": $COUNT}"#;

    #[test]
    fn finds_placeholders_inside_strings_only() {
        let names: Vec<_> = variables_in_json_strings(TEMPLATE).unwrap().into_iter().collect();
        assert_eq!(names, ["NAME", "QUOTED", "RECEIVER"]);
    }

    #[test]
    fn refuses_values_that_leave_the_string() {
        let set = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        check_json_string_values("t", TEMPLATE, &set("RECEIVER", "Pluto and Charon")).unwrap();
        check_json_string_values("t", TEMPLATE, &set("ADDTL_MOUNTS", r#", {"destination": "/y"}"#)).unwrap();
        for bad in [r#"x", "EVIL=1"#, "a\\", "line\nbreak"] {
            let err = check_json_string_values("t", TEMPLATE, &set("RECEIVER", bad)).unwrap_err();
            assert!(err.to_string().contains("--set RECEIVER"), "{err}");
        }
        assert!(check_json_string_values("t", TEMPLATE, &set("QUOTED", "\"")).is_err());
    }

    #[test]
    fn a_placeholder_after_a_backslash_takes_the_escape() {
        // With A="n", the quote after ${A} ends the first string, and $B is inside the second.
        let template = r#"{"a": "\${A}", "b": "$B"}"#;
        let names: Vec<_> = variables_in_json_strings(template).unwrap().into_iter().collect();
        assert_eq!(names, ["A", "B"]);
        let set =
            BTreeMap::from([("A".to_string(), "n".to_string()), ("B".to_string(), r#"", "evil": "1"#.to_string())]);
        assert!(check_json_string_values("t", template, &set).is_err());
        // With A empty, the backslash escapes that quote instead, and $B is still inside a string.
        let template = r#"{"a": "\${A}", "b": $B}"#;
        assert_eq!(variables_in_json_strings(template).unwrap().into_iter().collect::<Vec<_>>(), ["A", "B"]);
    }
}
