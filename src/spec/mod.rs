//! The runc `config.json` of a deployment: generated from the image config when the image ships
//! no template, and checked against the image contract either way. Pure: callers pass in whatever
//! files they read.
//!
//! An image's own config is judged on its JSON, not parsed into `oci-spec` types: sysctr checks
//! only what the contract promises (a JSON object whose root is the read-only `rootfs`, with a
//! process to run) and leaves the rest to runc, as atomic did. Legacy shapes that the runc here
//! would not read are rewritten in [`legacy`].

mod host_files;
mod legacy;
mod narrow;

use anyhow::{bail, Context, Result};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespaceType, Mount, MountBuilder, RootBuilder, Spec, UserBuilder,
};

pub use host_files::{fit_host_files, HostFileChange, SHARED_HOST_FILES};
pub use legacy::Rewrite;
pub use narrow::narrow_capabilities;

/// The largest `config.json` a deployment may have.
pub const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;
/// The rootfs directory a deployment's `config.json` must point at, relative to the bundle.
pub const ROOTFS: &str = "rootfs";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the generated config needs besides the image config.
#[derive(Debug, Default)]
pub struct GenerateInputs<'a> {
    pub hostname: &'a str,
    /// The rootfs's `/etc/passwd` and `/etc/group`, to resolve a user given by name.
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// Builds a `config.json` for an image that ships none: the image's Entrypoint + Cmd, Env,
/// WorkingDir and User, a read-only root, runc's default capabilities, host networking (system
/// containers serve the host), and tmpfs on `/tmp` and `/run` since the root cannot be written.
pub fn generate(image: &ImageConfiguration, inputs: &GenerateInputs) -> Result<String> {
    let config = image.config().clone().unwrap_or_default();
    let mut args: Vec<String> = config.entrypoint().clone().unwrap_or_default();
    args.extend(config.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        bail!("the image config has neither Entrypoint nor Cmd, so there is nothing to run");
    }
    let mut env: Vec<String> = config.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = config.working_dir().clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "/".into());
    let (uid, gid) = resolve_user(config.user().as_deref().unwrap_or(""), inputs)?;

    let mut spec = Spec::default();
    spec.set_hostname(Some(inputs.hostname.to_string()));
    spec.set_root(Some(RootBuilder::default().path(ROOTFS).readonly(true).build()?));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(cwd.into());
    process.set_user(UserBuilder::default().uid(uid).gid(gid).build()?);
    let caps: std::collections::HashSet<Capability> =
        [Capability::AuditWrite, Capability::Kill, Capability::NetBindService].into_iter().collect();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps.clone())
            .ambient(std::collections::HashSet::new())
            .inheritable(std::collections::HashSet::new())
            .build()?,
    ));
    spec.set_process(Some(process));

    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for dir in ["/tmp", "/run"] {
        mounts.push(
            MountBuilder::default()
                .destination(dir)
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
                .build()?,
        );
    }
    for file in SHARED_HOST_FILES {
        mounts.push(
            MountBuilder::default()
                .destination(file)
                .typ("bind")
                .source(file)
                .options(vec!["rbind".into(), "ro".into()])
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));

    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces_mut() {
            namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
        }
    }
    to_json(&spec)
}

/// Serializes a spec with sorted capability lists, so the same input always gives the same text.
pub fn to_json(spec: &Spec) -> Result<String> {
    let mut value = serde_json::to_value(spec).context("serializing config.json")?;
    if let Some(caps) = value.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for list in caps.values_mut() {
            if let Some(items) = list.as_array_mut() {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_string_pretty(&value).context("serializing config.json")
}

/// What the container's root is used for, which decides whether it must be read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootUse {
    /// A deployment: the rootfs shares its files with the image store.
    ReadOnly,
    /// A one-off run on a throw-away overlay: the config may ask for a writable root.
    Throwaway,
}

/// A config that passed the contract, with the legacy rewrites it needed.
#[derive(Debug)]
pub struct CheckedConfig {
    /// The config as runc gets it: the input text unchanged when nothing was rewritten.
    pub text: String,
    pub rewrites: Vec<Rewrite>,
}

/// Checks a `config.json` against the image contract and rewrites legacy shapes: it must be a
/// JSON object whose root is the deployment's `rootfs` (read-only for [`RootUse::ReadOnly`]),
/// with a process that has arguments. `file` names it in errors.
pub fn check(text: &str, file: &str, root_use: RootUse) -> Result<CheckedConfig> {
    let value: serde_json::Value = serde_json::from_str(text).with_context(|| format!("{file} is not valid JSON"))?;
    let serde_json::Value::Object(mut config) = value else {
        bail!("{file} is not a JSON object");
    };
    let root = config.get("root").with_context(|| format!("{file} has no 'root'"))?;
    if root.get("path").and_then(|p| p.as_str()) != Some(ROOTFS) {
        bail!("{file}: root.path must be \"{ROOTFS}\", found {}", root.get("path").unwrap_or(&serde_json::Value::Null));
    }
    if root_use == RootUse::ReadOnly && root.get("readonly") != Some(&serde_json::Value::Bool(true)) {
        bail!("{file}: root.readonly must be true (the rootfs shares its files with the image store)");
    }
    let process = config.get("process").with_context(|| format!("{file} has no 'process'"))?;
    match process.get("args").and_then(|a| a.as_array()) {
        Some(args) if !args.is_empty() && args.iter().all(|a| a.is_string()) => {}
        Some(args) if !args.is_empty() => bail!("{file}: process.args must be a list of strings"),
        _ => bail!("{file}: process.args is empty"),
    }
    let rewrites = legacy::upgrade(&mut config);
    if rewrites.is_empty() {
        return Ok(CheckedConfig { text: text.to_string(), rewrites });
    }
    let text = serde_json::to_string_pretty(&config).with_context(|| format!("serializing the rewritten {file}"))?;
    Ok(CheckedConfig { text, rewrites })
}

/// Resolves an image `User` (`uid`, `uid:gid`, `name`, `name:group`) to numeric ids.
fn resolve_user(user: &str, inputs: &GenerateInputs) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, lookup_by_id(inputs.passwd, uid).unwrap_or(0)),
        Err(_) => {
            let entry = lookup_by_name(inputs.passwd, user_part)
                .with_context(|| format!("the image user '{user_part}' is not in the image's /etc/passwd"))?;
            (entry.0, entry.1)
        }
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup_by_name(inputs.group, g)
                    .with_context(|| format!("the image group '{g}' is not in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// Finds `name` in passwd/group text; returns (field 3, field 4) as numbers (field 4 is 0 for groups).
fn lookup_by_name(file: Option<&str>, name: &str) -> Option<(u32, u32)> {
    file?.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) || fields.len() < 3 {
            return None;
        }
        let id = fields[2].parse().ok()?;
        let second = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(0);
        Some((id, second))
    })
}

fn lookup_by_id(passwd: Option<&str>, uid: u32) -> Option<u32> {
    passwd?.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[2].parse() == Ok(uid)).then(|| fields[3].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": config
        }))
        .unwrap()
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\netcd:x:998:997::/var/lib/etcd:/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:\n";

    #[test]
    fn generated_config_follows_the_image() {
        let img = image(serde_json::json!({
            "Entrypoint": ["/bin/etcd"], "Cmd": ["--name", "a b"], "Env": ["A=1"],
            "WorkingDir": "/var/lib/etcd", "User": "etcd"
        }));
        let text =
            generate(&img, &GenerateInputs { hostname: "etcd", passwd: Some(PASSWD), group: Some(GROUP) }).unwrap();
        check(&text, "config.json", RootUse::ReadOnly).unwrap();
        let spec: Spec = serde_json::from_str(&text).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/etcd", "--name", "a b"]);
        assert_eq!(process.env().as_ref().unwrap(), &[DEFAULT_PATH.to_string(), "A=1".into()]);
        assert_eq!(process.cwd().to_str(), Some("/var/lib/etcd"));
        assert_eq!((process.user().uid(), process.user().gid()), (998, 997));
        assert_eq!(spec.hostname().as_deref(), Some("etcd"));
        let namespaces = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(namespaces.iter().all(|n| n.typ() != LinuxNamespaceType::Network));
        assert!(namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
    }

    #[test]
    fn output_is_deterministic() {
        let img = image(serde_json::json!({"Cmd": ["/bin/sh"]}));
        let inputs = GenerateInputs { hostname: "x", ..Default::default() };
        let first = generate(&img, &inputs).unwrap();
        for _ in 0..5 {
            assert_eq!(generate(&img, &inputs).unwrap(), first);
        }
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn users() {
        let inputs = GenerateInputs { hostname: "x", passwd: Some(PASSWD), group: Some(GROUP) };
        assert_eq!(resolve_user("", &inputs).unwrap(), (0, 0));
        assert_eq!(resolve_user("1000", &inputs).unwrap(), (1000, 0));
        assert_eq!(resolve_user("998", &inputs).unwrap(), (998, 997));
        assert_eq!(resolve_user("1000:50", &inputs).unwrap(), (1000, 50));
        assert_eq!(resolve_user("etcd:wheel", &inputs).unwrap(), (998, 10));
        let err = resolve_user("nobody", &inputs).unwrap_err().to_string();
        assert!(err.contains("'nobody'"), "{err}");
        assert!(resolve_user("etcd:nogroup", &inputs).is_err());
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let err = generate(&image(serde_json::json!({})), &GenerateInputs::default()).unwrap_err();
        assert!(err.to_string().contains("neither Entrypoint nor Cmd"));
    }

    #[test]
    fn the_contract_refuses_writable_or_moved_roots_and_nothing_to_run() {
        let img = image(serde_json::json!({"Cmd": ["/bin/sh"]}));
        let good = generate(&img, &GenerateInputs { hostname: "x", ..Default::default() }).unwrap();
        let checked = check(&good, "config.json", RootUse::ReadOnly).unwrap();
        assert_eq!(checked.text, good, "a config needing no rewrite is passed on as it is");
        assert!(checked.rewrites.is_empty());
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["root"]["readonly"] = serde_json::json!(false);
        let err = check(&v.to_string(), "config.json", RootUse::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("readonly"), "{err}");
        check(&v.to_string(), "config.json", RootUse::Throwaway).unwrap();
        v["root"] = serde_json::json!({"path": "/", "readonly": true});
        let err = check(&v.to_string(), "config.json", RootUse::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("root.path"), "{err}");
        v["root"] = serde_json::json!({"path": "rootfs", "readonly": true});
        v["process"]["args"] = serde_json::json!([]);
        let err = check(&v.to_string(), "config.json", RootUse::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("process.args is empty"), "{err}");
        v["process"]["args"] = serde_json::json!(["/bin/sh", 1]);
        let err = check(&v.to_string(), "config.json", RootUse::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("list of strings"), "{err}");
        let err =
            check("{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"rootfs\"", "config.json", RootUse::ReadOnly)
                .unwrap_err();
        assert!(format!("{err:#}").contains("config.json is not valid JSON"));
        let err = check("[1]", "config.json", RootUse::ReadOnly).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    /// What `runc spec` wrote in 2017, as atomic's test images still carry it: a value oci-spec
    /// refuses, which runc reads as "no seccomp filter".
    #[test]
    fn legacy_configs_pass_and_are_rewritten() {
        let legacy = r#"{"ociVersion": "0.3.0", "platform": {"os": "linux", "arch": "amd64"},
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "cwd": "/"},
            "root": {"path": "rootfs", "readonly": true}, "hooks": {},
            "linux": {"devices": null, "seccomp": {"defaultAction": "", "architectures": null}}}"#;
        assert!(serde_json::from_str::<Spec>(legacy).is_err(), "oci-spec now reads this shape");
        let checked = check(legacy, "config.json.template", RootUse::ReadOnly).unwrap();
        assert_eq!(checked.rewrites, [Rewrite::EmptySeccompRemoved]);
        let v: serde_json::Value = serde_json::from_str(&checked.text).unwrap();
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["platform"]["arch"], "amd64", "fields runc ignores are kept");
    }
}
