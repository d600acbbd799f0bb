//! Values from outside (`--set`, an image's defaults) reach the container exactly as given, or
//! are refused with an error naming the variable: rendered files are read back here the way
//! systemd and runc read them.

use std::collections::BTreeMap;

use super::variables::tests::forced;
use super::{check_json_string_values, render_file, render_unit, test_values as values, FileKind};

/// Values that would change the structure of a line if inserted raw.
const HOSTILE: [&str; 11] = [
    r#"x" "LD_PRELOAD=/tmp/evil.so"#,
    "x' 'LD_PRELOAD=/tmp/evil.so",
    "a b  c",
    r"back\slash",
    r"\x20\s\n",
    "100% %n %%",
    "$HOME ${HOME} $$",
    ";",
    "; /bin/evil",
    "-",
    "é ü 𝄞",
];

fn unit(text: &str, pairs: &[(&str, &str)]) -> anyhow::Result<String> {
    render_unit("service.template", text, &forced(), &values(pairs))
}

/// The value of directive `key` in a rendered unit (the last assignment).
fn directive<'u>(unit: &'u str, key: &str) -> &'u str {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}= in {unit}"))
}

/// The words systemd makes of the value of an `Exec*=` line (`command_line`) or an
/// `Environment=` line: quotes and C escapes as `extract_first_word(EXTRACT_UNQUOTE |
/// EXTRACT_CUNESCAPE)` reads them, then `%%` specifiers and, in command lines, `$$`. Panics on
/// what would make systemd read more than the words: a lone `;` (a command separator in a
/// command line), unbalanced quotes, an unknown escape, another specifier, or a `$` systemd
/// would expand.
fn systemd_words(rvalue: &str, command_line: bool) -> Vec<String> {
    let chars: Vec<char> = rvalue.chars().collect();
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while chars.get(i).is_some_and(|&c| is_space(c)) {
            i += 1;
        }
        if i == chars.len() {
            return words;
        }
        if command_line && chars[i] == ';' && chars.get(i + 1).is_none_or(|&c| is_space(c)) {
            panic!("a command separator in {rvalue:?}");
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(&c) = chars.get(i) {
            i += 1;
            if c == '\\' {
                let escaped = *chars.get(i).unwrap_or_else(|| panic!("a trailing backslash in {rvalue:?}"));
                i += 1;
                word.push(match escaped {
                    '\\' | '"' | '\'' => escaped,
                    's' => ' ',
                    'n' => '\n',
                    't' => '\t',
                    'x' => {
                        let hex: String = chars[i..i + 2].iter().collect();
                        i += 2;
                        char::from(u8::from_str_radix(&hex, 16).unwrap())
                    }
                    _ => panic!("an unknown escape \\{escaped} in {rvalue:?}"),
                });
                continue;
            }
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None if c == '"' || c == '\'' => quote = Some(c),
                None if is_space(c) => break,
                None => word.push(c),
            }
        }
        assert!(quote.is_none(), "unbalanced quotes in {rvalue:?}");
        let word = unescape_doubled(&word, '%', "specifier");
        words.push(if command_line { unescape_doubled(&word, '$', "variable") } else { word });
    }
}

/// `word` with each doubled `sign` made single; a single one panics.
fn unescape_doubled(word: &str, sign: char, what: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c == sign {
            assert_eq!(chars.next(), Some(sign), "a {what} systemd would expand in {word:?}");
        }
        out.push(c);
    }
    out
}

#[test]
fn environment_values_stay_one_assignment() {
    for template in
        ["Environment=\"FOO=$FOO\"", "Environment=FOO=$FOO", "Environment='FOO=$FOO'", "Environment=FOO=\"$FOO\""]
    {
        for value in HOSTILE {
            let text = format!("[Service]\n{template}\nEnvironment=OTHER=1\n");
            let rendered = unit(&text, &[("FOO", value)]).unwrap();
            let first = rendered.lines().find_map(|line| line.strip_prefix("Environment=")).unwrap();
            assert_eq!(systemd_words(first, false), [format!("FOO={value}")], "{template} with {value:?}: {rendered}");
            assert_eq!(directive(&rendered, "Environment"), "OTHER=1");
        }
    }
}

#[test]
fn command_line_values_stay_one_argument() {
    let text = "[Service]\nExecStart=/bin/app --opt=$FOO \"$FOO\" '$FOO' $FOO x${FOO}y\nExecStop=/bin/stop\n";
    for value in HOSTILE {
        let rendered = unit(text, &[("FOO", value)]).unwrap();
        let words = systemd_words(directive(&rendered, "ExecStart"), true);
        let expected = [
            "/bin/app".to_owned(),
            format!("--opt={value}"),
            value.into(),
            value.into(),
            value.into(),
            format!("x{value}y"),
        ];
        assert_eq!(words, expected, "{value:?}: {rendered}");
        assert_eq!(directive(&rendered, "ExecStop"), "/bin/stop");
    }
    // A continued line is still one command line.
    let rendered = unit("ExecStart=/bin/app \\\n  --opt=$FOO\n", &[("FOO", "a b")]).unwrap();
    assert_eq!(systemd_words(&rendered["ExecStart=".len()..].replace("\\\n", " "), true), ["/bin/app", "--opt=a b"]);
}

#[test]
fn command_prefixes_from_values_are_refused() {
    for value in ["+/bin/sh", "-/bin/sh", "@/bin/sh", "!/bin/sh", ":/bin/sh", "|/bin/sh"] {
        for template in
            ["ExecStart=$CMD --flag\n", "ExecStart=-$CMD\n", "ExecStartPre= ${CMD}\n", "ExecStop=\"$CMD\"\n"]
        {
            let err = unit(template, &[("CMD", value)]).unwrap_err();
            assert!(format!("{err:#}").starts_with("value of 'CMD' "), "{template:?} {value:?}: {err:#}");
        }
    }
    let rendered = unit("ExecStart=$CMD --flag=$CMD\n", &[("CMD", "/usr/bin/app")]).unwrap();
    assert_eq!(rendered, "ExecStart=/usr/bin/app --flag=/usr/bin/app\n");
    // systemd expands no `$` in the path of a command, so `$$` would stay as it is there.
    let err = unit("ExecStart=/opt/$DIR/app $DIR\n", &[("DIR", "a$b")]).unwrap_err();
    assert!(format!("{err:#}").starts_with("value of 'DIR' contains '$'"), "{err:#}");
    let rendered = unit("ExecStart=/opt/app $DIR\n", &[("DIR", "a$b")]).unwrap();
    assert_eq!(systemd_words(directive(&rendered, "ExecStart"), true), ["/opt/app", "a$b"]);
}

#[test]
fn control_characters_are_refused_in_units() {
    for value in [
        "a\nExecStartPre=/bin/evil",
        "a\rb",
        "\u{1b}[2J",
        "tab\there",
        "bell\u{7}",
        "del\u{7f}",
        "next\u{85}line",
        "nul\0",
    ] {
        for template in ["Environment=\"FOO=$FOO\"\n", "ExecStart=/bin/app $FOO\n", "Description=$FOO\n", "# $FOO\n"] {
            let err = unit(template, &[("FOO", value)]).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.starts_with("value of 'FOO' contains "), "{template:?} {value:?}: {message}");
            assert!(message.contains("'service.template'"), "{message}");
        }
    }
}

#[test]
fn other_directives_keep_values_whole() {
    // Text up to the end of the line: only specifiers are escaped.
    let value = r#"My "quoted" 100% \ service"#;
    assert_eq!(unit("Description=$D\n", &[("D", value)]).unwrap(), "Description=My \"quoted\" 100%% \\ service\n");
    // Percentages, which these directives read without specifiers.
    assert_eq!(unit("CPUQuota=$Q\nMemoryMax=$Q\n", &[("Q", "20%")]).unwrap(), "CPUQuota=20%\nMemoryMax=20%\n");
    assert_eq!(unit("User=$U\nAfter=$U\n", &[("U", "a%b")]).unwrap(), "User=a%%b\nAfter=a%%b\n");
    // Elsewhere a value that systemd might split or unquote is refused.
    for value in ["a.service b.service", "\"a.service\"", "a\\x2d.service", "'a'"] {
        for template in ["After=$AFTER\n", "[Install]\nRequiredBy=$AFTER\n", "CPUQuota=$AFTER\n"] {
            let err = unit(template, &[("AFTER", value)]).unwrap_err();
            assert!(format!("{err:#}").starts_with("value of 'AFTER' "), "{template:?} {value:?}: {err:#}");
        }
    }
    assert_eq!(unit("After=$AFTER\n", &[("AFTER", "network.target")]).unwrap(), "After=network.target\n");
}

#[test]
fn values_in_keys_and_section_names_are_names() {
    assert_eq!(unit("[X-$S]\n$K=1\n", &[("S", "Sysctr"), ("K", "X-Tag_1")]).unwrap(), "[X-Sysctr]\nX-Tag_1=1\n");
    for (template, value) in [("$K=1\n", "User=root #"), ("$K=1\n", "A B"), ("[$S]\n", "Service]\n"), ("[$S]\n", "A%")]
    {
        let err = unit(template, &[("K", value), ("S", value)]).unwrap_err();
        assert!(format!("{err:#}").contains("value of '"), "{template:?} {value:?}: {err:#}");
    }
}

#[test]
fn a_value_ending_a_line_with_a_backslash_is_refused() {
    let err = unit("Environment=\"FOO=a\" B=$B\nUser=root\n", &[("B", "b\\")]).unwrap_err();
    assert!(format!("{err:#}").starts_with("value of 'B' ends with a backslash at the end of a line"), "{err:#}");
    let rendered = unit("Environment=B=$B C=1\n", &[("B", "b\\")]).unwrap();
    assert_eq!(systemd_words(directive(&rendered, "Environment"), false), ["B=b\\", "C=1"]);
}

#[test]
fn a_comment_ending_with_a_backslash_continues_nothing() {
    let rendered = unit("# note \\\nEnvironment=FOO=$FOO\n", &[("FOO", "a b")]).unwrap();
    assert_eq!(rendered, "# note \\\nEnvironment=FOO=a\\x20b\n");
}

#[test]
fn a_value_right_after_a_backslash_is_refused() {
    let err = unit("ExecStart=/bin/app \\$FOO\n", &[("FOO", "x")]).unwrap_err();
    assert!(format!("{err:#}").starts_with("value of 'FOO' "), "{err:#}");
}

/// atomic's images use sysctr's command lines as whole directives; they render as before.
#[test]
fn sysctr_command_lines_go_in_as_they_are() {
    let templates = [
        // hello-world, etcd, flannel (projectatomic/atomic-system-containers)
        "[Unit]\nDescription=Hello World System Container\n\n[Service]\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\n\
         Restart=on-failure\nWorkingDirectory=$DESTDIR\n\n[Install]\nWantedBy=multi-user.target\n",
        "[Unit]\nDescription=Etcd Server\nAfter=network.target\n\n[Service]\nExecStartPre=$EXEC_STARTPRE\n\
         ExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nExecStopPost=$EXEC_STOPPOST\nRestart=on-failure\n\
         WorkingDirectory=$DESTDIR\nPIDFile=$PIDFILE\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n",
        "[Unit]\nDescription=Flanneld overlay address etcd agent\nAfter=network.target\nAfter=$AFTER\nBefore=$BEFORE\n\n\
         [Service]\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nRestart=on-failure\nWorkingDirectory=$DESTDIR\n\n\
         [Install]\nWantedBy=multi-user.target\nRequiredBy=$REQUIRED_BY\n",
        "[Service]\nType=simple\nWorkingDirectory=${DESTDIR}/rootfs\nRuntimeDirectory=${NAME}\n\
         ExecStart=/bin/sh -c 'pwd > /run/${NAME}/greeting; exec sleep 100000'\n",
    ];
    let mut all: BTreeMap<String, String> = forced().variables().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    all.extend(values(&[
        ("PIDFILE", "/run/container-etcd.pid"),
        ("AFTER", "docker.service"),
        ("BEFORE", "multi-user.target"),
        ("REQUIRED_BY", "multi-user.target"),
    ]));
    for template in templates {
        let expected = super::substitute(template, &all).unwrap();
        assert_eq!(render_unit("service.template", template, &forced(), &all).unwrap(), expected);
    }
    let rendered = render_unit("service.template", templates[0], &forced(), &all).unwrap();
    assert_eq!(
        systemd_words(directive(&rendered, "ExecStart"), true),
        ["/usr/bin/runc", "--systemd-cgroup", "run", "etcd"]
    );
}

/// A value from outside cannot pass for one of sysctr's command lines.
#[test]
fn only_sysctr_values_count_as_command_lines() {
    let mut pairs = forced().variables().map(|(k, v)| (k, v.clone()));
    pairs[2].1 = "/bin/evil --flag".to_owned();
    let mut map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    map.insert("FOO".to_owned(), "/bin/evil --flag".to_owned());
    let rendered =
        render_unit("service.template", "ExecStart=$EXEC_START\nExecStop=/bin/x $FOO\n", &forced(), &map).unwrap();
    assert_eq!(directive(&rendered, "ExecStart"), "/usr/bin/runc --systemd-cgroup run 'etcd'");
    assert_eq!(systemd_words(directive(&rendered, "ExecStop"), true), ["/bin/x", "/bin/evil --flag"]);
}

fn tmpfiles(text: &str, pairs: &[(&str, &str)]) -> anyhow::Result<String> {
    render_file("tmpfiles.template", text, FileKind::Tmpfiles, &values(pairs))
}

#[test]
fn tmpfiles_values_stay_one_field() {
    let text = "d /run/$NAME 0700 $OWNER - -\nL+ /etc/$NAME - - - - /usr/share/$TARGET\n";
    let rendered = tmpfiles(text, &[("NAME", "etcd"), ("OWNER", "1000"), ("TARGET", "é-1.0_x")]).unwrap();
    assert_eq!(rendered, "d /run/etcd 0700 1000 - -\nL+ /etc/etcd - - - - /usr/share/é-1.0_x\n");
    for value in ["a b", "a\tb", "x\ny", "\"x", "x'", r"a\x20b", "%h", "\u{1b}[2J", "a\u{a0}b"] {
        for variable in ["NAME", "OWNER", "TARGET"] {
            let mut pairs = vec![("NAME", "etcd"), ("OWNER", "1000"), ("TARGET", "t")];
            pairs.iter_mut().find(|(name, _)| *name == variable).unwrap().1 = value;
            let err = tmpfiles(text, &pairs).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.starts_with(&format!("value of '{variable}' ")), "{value:?}: {message}");
            assert!(message.contains("'tmpfiles.template'"), "{message}");
        }
    }
}

/// A value cannot turn an entry into a comment, which would drop it.
#[test]
fn tmpfiles_values_never_make_a_line_a_comment() {
    for (template, value) in [("$TYPE /run/x 0755 - - -\n", "#"), ("$TYPE#d /run/x\n", "")] {
        let err = render_file("tmpfiles.template", template, FileKind::Tmpfiles, &values(&[("TYPE", value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'TYPE'") && err.contains("a comment"), "{template:?}: {err}");
    }
    let inside = render_file("tmpfiles.template", "d /run/$X 0755\n", FileKind::Tmpfiles, &values(&[("X", "#x")]));
    assert_eq!(inside.unwrap(), "d /run/#x 0755\n");
}

#[test]
fn tmpfiles_values_never_leave_a_field_empty() {
    for text in
        ["d /run/x 0700 $OWNER - -\n", "$TYPE /run/x\n", "d /run/x 0700 - - $OWNER", "d /run/x 0700 $OWNER$OWNER - -\n"]
    {
        let err = tmpfiles(text, &[("OWNER", ""), ("TYPE", "")]).unwrap_err();
        assert!(format!("{err:#}").contains("is empty"), "{text:?}: {err:#}");
    }
    let ok = tmpfiles("d /run/x$EMPTY 0700 ${EMPTY}root - -\n# $EMPTY\n", &[("EMPTY", "")]).unwrap();
    assert_eq!(ok, "d /run/x 0700 root - -\n# \n");
}

#[test]
fn tmpfiles_comments_take_any_value_on_one_line() {
    assert_eq!(tmpfiles("# owner: $O\n", &[("O", "a \"b\" 50%")]).unwrap(), "# owner: a \"b\" 50%\n");
    assert!(tmpfiles("# owner: $O\n", &[("O", "a\nb")]).is_err());
}

#[test]
fn json_string_values_stay_one_string() {
    let template = r#"{"process": {"env": ["FOO=$FOO", "PATH=/bin"], "args": ["/bin/app", "--opt=$FOO"]}}"#;
    for value in [r#"x", "LD_PRELOAD=/tmp/evil.so"#, r"a\", "a\nb", "\u{1b}"] {
        let err = check_json_string_values("config.json.template", template, &values(&[("FOO", value)])).unwrap_err();
        assert!(err.to_string().starts_with("--set FOO=...: "), "{err}");
    }
    for value in HOSTILE.iter().filter(|value| !value.contains(['"', '\\'])) {
        let pairs = values(&[("FOO", value)]);
        check_json_string_values("config.json.template", template, &pairs).unwrap();
        let rendered = render_file("config.json.template", template, FileKind::Raw, &pairs).unwrap();
        let config: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(config["process"]["env"], serde_json::json!([format!("FOO={value}"), "PATH=/bin"]));
        assert_eq!(config["process"]["args"], serde_json::json!(["/bin/app", format!("--opt={value}")]));
    }
}
