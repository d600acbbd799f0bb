//! Man pages and shell completions, generated from the command-line definitions themselves, so
//! that they cannot drift from them. The packages run `sysctr generate-docs DIR` after the build.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Opts;

/// Writes `DIR/man/sysctr.8` and a `sysctr-VERB.8` for each visible verb, and
/// `DIR/completions/{sysctr.bash,_sysctr,sysctr.fish}`.
pub fn generate(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for sub in [&man, &completions] {
        std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    let command = Opts::command();
    write_man(&man.join("sysctr.8"), command.clone())?;
    for verb in command.get_subcommands().filter(|verb| !verb.is_hide_set()) {
        let name = format!("sysctr-{}", verb.get_name());
        let page = verb.clone().display_name(name.clone()).bin_name(format!("sysctr {}", verb.get_name()));
        write_man(&man.join(format!("{name}.8")), page)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Opts::command(), "sysctr", &completions)
            .with_context(|| format!("writing the {shell} completions into {}", completions.display()))?;
    }
    Ok(())
}

fn write_man(path: &Path, command: clap::Command) -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).section("8").render(&mut page).context("rendering a man page")?;
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_gets_a_page_and_every_shell_its_completions() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let install = std::fs::read_to_string(dir.path().join("man/sysctr-install.8")).unwrap();
        assert!(install.contains("sysctr\\-install") && install.contains("\\-\\-now"), "{install}");
        let main = std::fs::read_to_string(dir.path().join("man/sysctr.8")).unwrap();
        assert!(main.contains(".TH sysctr 8") && main.contains("sysctr\\-login(8)"), "{main}");
        assert!(!dir.path().join("man/sysctr-fit-capabilities.8").exists(), "a hidden verb got a page");
        let bash = std::fs::read_to_string(dir.path().join("completions/sysctr.bash")).unwrap();
        assert!(bash.contains("--max-layer-size") && bash.contains("logout"));
        for file in ["completions/_sysctr", "completions/sysctr.fish"] {
            assert!(std::fs::metadata(dir.path().join(file)).unwrap().len() > 0, "{file}");
        }
    }
}
