//! JSON templates (`config.json.template`) insert values raw, because some images pass JSON
//! fragments on purpose (`$ADDTL_MOUNTS`). A placeholder *inside* a JSON string is different: a
//! value there must stay string content, or `--set` could inject keys and array elements.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use super::substitute::{Piece, Pieces};

/// The variables whose placeholders sit inside a JSON string literal of `text`.
pub fn variables_in_json_strings(text: &str) -> Result<BTreeSet<String>> {
    let mut inside = false;
    let mut escaped = false;
    let mut names = BTreeSet::new();
    for piece in Pieces::new(text) {
        match piece? {
            Piece::Text(literal) => {
                for c in literal.chars() {
                    match (inside, escaped, c) {
                        (true, true, _) => escaped = false,
                        (true, false, '\\') => escaped = true,
                        (_, _, '"') => inside = !inside,
                        _ => {}
                    }
                }
            }
            Piece::Variable(name) if inside => {
                names.insert(name.to_string());
            }
            Piece::Variable(_) => {}
        }
    }
    Ok(names)
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
}
