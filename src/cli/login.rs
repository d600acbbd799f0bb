use std::io::Read as _;

use anyhow::{bail, Context, Result};

use crate::registry::{self, Credentials, RegistryOptions};

/// Longest password read from standard input.
const MAX_PASSWORD: u64 = 64 * 1024;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct LoginOpts {
    /// The registry, `HOST[:PORT]`.
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password (or token) from standard input: the only way it is taken, so that it
    /// never shows in a process list or a shell history.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub connection: super::ConnectionArgs,
}

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct LogoutOpts {
    /// The registry, `HOST[:PORT]`, as given to `sysctr login`.
    pub registry: String,
    #[command(flatten)]
    pub auth: super::AuthArgs,
}

pub async fn run(opts: &LoginOpts) -> Result<()> {
    let registry = registry_name(&opts.registry)?;
    if !opts.password_stdin {
        bail!("give the password on standard input, with --password-stdin");
    }
    let mut password = String::new();
    std::io::stdin()
        .take(MAX_PASSWORD + 1)
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    if password.len() as u64 > MAX_PASSWORD {
        bail!("the password on standard input is longer than {MAX_PASSWORD} bytes");
    }
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    let credentials = Credentials { username: opts.username.clone(), password };
    let options: RegistryOptions = opts.connection.options();
    let file = registry::login(registry, &credentials, &options).await?;
    crate::say!("logged in to {registry} (credentials saved in {})", file.display());
    Ok(())
}

pub fn run_logout(opts: &LogoutOpts) -> Result<()> {
    let registry = registry_name(&opts.registry)?;
    let file = opts.auth.files().write_target();
    if registry::logout(&file, registry)? {
        crate::say!("removed the credentials for {registry} from {}", file.display());
        Ok(())
    } else {
        bail!("{} holds no credentials for {registry}", file.display())
    }
}

/// `HOST[:PORT]`, from what a user may type (`docker://HOST`, `https://HOST/`).
fn registry_name(given: &str) -> Result<&str> {
    let name = given.trim_start_matches("docker://").trim_start_matches("https://").trim_start_matches("http://");
    let name = name.trim_end_matches('/');
    let valid = !name.is_empty()
        && !name.contains('/')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        bail!("'{given}' is not a registry: expected HOST[:PORT]");
    }
    Ok(name)
}
