//! cloud-init NoCloud seeds: an ISO 9660 image labelled `cidata` holding
//! `meta-data` and `user-data`.
//!
//! The ISO is built with `genisoimage` (Debian package genisoimage), the tool
//! `cloud-localds` uses: Joliet and Rock Ridge names, which cloud-init reads.
//!
//! Both files are YAML rendered from `templates/cloud-init/`; every value goes
//! through the `tojson` filter, and a JSON string is a valid YAML scalar, so
//! no hostname or key comment can change the document's structure. Printing a
//! value without `tojson` is a render error.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::disk::run_tool;
use super::{Result, VirtError};

const META_DATA_TEMPLATE: &str = include_str!("../../templates/cloud-init/meta-data.yaml");
const USER_DATA_TEMPLATE: &str = include_str!("../../templates/cloud-init/user-data.yaml");
const GENISOIMAGE: &str = "genisoimage";

/// What goes into a VM's seed.
#[derive(Clone, Debug)]
pub struct SeedSpec<'a> {
    /// Unique per VM instance; cloud-init reruns first-boot setup when it changes.
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// The guest account that receives the keys.
    pub os_user: &'a str,
    /// OpenSSH public key lines.
    pub ssh_keys: &'a [String],
}

/// JSON text that is also a safe YAML flow scalar: besides JSON's own
/// escapes, the characters YAML treats as line breaks or as unprintable
/// (DEL, NEL, C1 controls, LS, PS, BOM, U+FFFE, U+FFFF) are written as `\uXXXX`.
fn to_yaml_json(value: &Value) -> std::result::Result<String, Error> {
    let json = serde_json::to_string(value)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| AutoEscape::Custom("yaml"));
        env.add_filter(
            "tojson",
            |value: Value| -> std::result::Result<Value, Error> {
                Ok(Value::from_safe_string(to_yaml_json(&value)?))
            },
        );
        env.set_formatter(|out, _state, value| {
            if !value.is_safe() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "cloud-init templates must print values through `|tojson`",
                ));
            }
            out.write_str(&value.to_string())?;
            Ok(())
        });
        env.add_template("meta-data", META_DATA_TEMPLATE)
            .expect("templates/cloud-init/meta-data.yaml parses");
        env.add_template("user-data", USER_DATA_TEMPLATE)
            .expect("templates/cloud-init/user-data.yaml parses");
        env
    })
}

/// Renders `(meta-data, user-data)`.
pub fn render(spec: &SeedSpec) -> Result<(String, String)> {
    let ctx = context! {
        instance_id => spec.instance_id,
        hostname => spec.hostname,
        os_user => spec.os_user,
        ssh_keys => spec.ssh_keys,
    };
    let meta = env().get_template("meta-data")?.render(&ctx)?;
    let user = env().get_template("user-data")?.render(&ctx)?;
    Ok((meta, user))
}

/// A private directory next to the seed, removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    crate::files::write(path, contents.as_bytes())
        .map_err(VirtError::io(format!("writing `{}`", path.display())))
}

/// Writes the seed ISO to `path` (replacing it atomically if it exists):
/// both files go into a fresh private directory beside `path`, then
/// `genisoimage -quiet -output seed.iso -volid cidata -joliet -rock
/// user-data meta-data` runs there, and the result, made private (0600), is
/// renamed into place.
pub fn write_seed(path: &Path, meta_data: &str, user_data: &str) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| VirtError::Io {
            context: format!("seed path `{}`", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.join(format!(".{file_name}.{:016x}.tmp", rand::random::<u64>()));
    crate::files::new_dir(&dir, crate::files::PRIVATE_DIR)
        .map_err(VirtError::io(format!("creating `{}`", dir.display())))?;
    let work = WorkDir(dir);

    write_file(&work.0.join("meta-data"), meta_data)?;
    write_file(&work.0.join("user-data"), user_data)?;
    run_tool(
        GENISOIMAGE,
        Command::new(GENISOIMAGE).current_dir(&work.0).args([
            "-quiet",
            "-output",
            "seed.iso",
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            "user-data",
            "meta-data",
        ]),
    )?;
    // genisoimage leaves it to the umask; the seed holds the owner's keys and hostname.
    let iso = work.0.join("seed.iso");
    crate::files::set_mode(&iso, crate::files::PRIVATE)
        .map_err(VirtError::io(format!("writing `{}`", path.display())))?;
    fs::rename(&iso, path).map_err(VirtError::io(format!("writing `{}`", path.display())))?;
    tracing::debug!(seed = %path.display(), "wrote cloud-init seed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renders_meta_data() {
        let k = keys(&["ssh-ed25519 AAAAC3 alice@laptop"]);
        let (meta, _) = render(&SeedSpec {
            instance_id: "i-5b5e0c1e",
            hostname: "web1",
            os_user: "ubuntu",
            ssh_keys: &k,
        })
        .unwrap();
        assert_eq!(
            meta,
            "instance-id: \"i-5b5e0c1e\"\nlocal-hostname: \"web1\"\n"
        );
    }

    #[test]
    fn renders_user_data() {
        let k = keys(&["ssh-ed25519 AAAAC3 alice@laptop", "ssh-rsa AAAAB3 work"]);
        let (_, user) = render(&SeedSpec {
            instance_id: "i-1",
            hostname: "web1",
            os_user: "ubuntu",
            ssh_keys: &k,
        })
        .unwrap();
        assert!(user.starts_with("#cloud-config\n"), "{user}");
        for line in [
            "hostname: \"web1\"\n",
            "manage_etc_hosts: true\n",
            "ssh_pwauth: false\n",
            "users:\n  - name: \"ubuntu\"\n",
            "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
            "    shell: /bin/bash\n",
            "    lock_passwd: true\n",
            "    ssh_authorized_keys: [\"ssh-ed25519 AAAAC3 alice@laptop\",\"ssh-rsa AAAAB3 work\"]\n",
        ] {
            assert!(user.contains(line), "missing {line:?} in\n{user}");
        }
        assert!(!user.contains("package_update"), "{user}");
        assert!(!user.contains("locale"), "{user}");
    }

    #[test]
    fn hostile_values_stay_json_strings() {
        let evil = "ssh-ed25519 AAAA x\": \n- evil\n  - name: root\u{2028}#";
        let k = keys(&[evil]);
        let (meta, user) = render(&SeedSpec {
            instance_id: "i-1\ninstance-id: other",
            hostname: "h\": x\n- y",
            os_user: "ubuntu",
            ssh_keys: &k,
        })
        .unwrap();
        // One user, one line per key, no line break smuggled in.
        let items = user.lines().filter(|l| l.trim_start().starts_with("- "));
        assert_eq!(items.count(), 1, "{user}");
        assert_eq!(user.lines().count(), 10, "{user}");
        assert_eq!(meta.lines().count(), 2, "{meta}");
        assert!(
            user.contains(
                "    ssh_authorized_keys: [\"ssh-ed25519 AAAA x\\\": \\n- evil\\n  - name: root\\u2028#\"]\n"
            ),
            "{user}"
        );
        assert!(user.contains("hostname: \"h\\\": x\\n- y\"\n"), "{user}");
        assert!(
            meta.contains("instance-id: \"i-1\\ninstance-id: other\"\n"),
            "{meta}"
        );
        // Each escaped value still decodes to the original with a JSON parser.
        let keys_json = user
            .lines()
            .find_map(|l| l.strip_prefix("    ssh_authorized_keys: "))
            .unwrap();
        let decoded: Vec<String> = serde_json::from_str(keys_json).unwrap();
        assert_eq!(decoded, vec![evil.to_string()]);
    }

    /// DEL, U+FFFE and U+FFFF went out raw, and a YAML parser (cloud-init's too)
    /// refuses a whole document for one of them: the VM would get no keys.
    #[test]
    fn characters_yaml_will_not_read_raw_are_escaped() {
        let k = keys(&["ssh-ed25519 AAAA \u{7f}\u{fffe}\u{ffff}"]);
        let (_, user) = render(&SeedSpec {
            instance_id: "i-1",
            hostname: "h\u{7f}",
            os_user: "ubuntu",
            ssh_keys: &k,
        })
        .unwrap();
        assert!(user.contains("hostname: \"h\\u007f\"\n"), "{user}");
        assert!(
            user.contains("[\"ssh-ed25519 AAAA \\u007f\\ufffe\\uffff\"]"),
            "{user}"
        );
    }

    #[test]
    fn printing_without_tojson_is_refused() {
        let e = env()
            .render_str("{{ x }}", context! { x => "a" })
            .unwrap_err();
        assert!(e.to_string().contains("tojson"), "{e}");
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::testing::{config, ed25519_key_line, text_near};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_norway::{Mapping, Value as Yaml};

    /// Characters that mean something to YAML or JSON, line breaks of every kind, and
    /// characters YAML will not have unescaped.
    const YAMLISH: &str =
        "a1 :#-\"'\\{}[],&*!|>%@`\n\r\t\u{0}\u{7f}\u{85}\u{a0}\u{2028}\u{feff}\u{fffe}\u{ffff}";

    fn text() -> impl Strategy<Value = String> {
        text_near(YAMLISH, 30)
    }

    fn key_lines() -> impl Strategy<Value = Vec<String>> {
        vec(prop_oneof![ed25519_key_line(), text()], 0..4)
    }

    /// `text` parsed by a YAML parser, or the parser's complaint and the text.
    fn yaml(text: &str) -> std::result::Result<Yaml, TestCaseError> {
        serde_norway::from_str(text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))
    }

    fn get<'a>(map: &'a Yaml, key: &str) -> &'a Yaml {
        map.get(key)
            .unwrap_or_else(|| panic!("no `{key}` in {map:?}"))
    }

    fn keys(map: &Yaml) -> Vec<&str> {
        let map: &Mapping = map.as_mapping().expect("a mapping");
        map.keys()
            .map(|k| k.as_str().expect("a string key"))
            .collect()
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever text the values hold, both documents parse as YAML with exactly the
        /// template's keys, and give back every value.
        #[test]
        fn seeds_give_back_every_value(
            instance_id in text(),
            hostname in text(),
            os_user in text(),
            ssh_keys in key_lines(),
        ) {
            let spec = SeedSpec {
                instance_id: &instance_id,
                hostname: &hostname,
                os_user: &os_user,
                ssh_keys: &ssh_keys,
            };
            let (meta, user) = render(&spec).unwrap();
            let meta = yaml(&meta)?;
            prop_assert_eq!(keys(&meta), ["instance-id", "local-hostname"]);
            prop_assert_eq!(get(&meta, "instance-id").as_str(), Some(instance_id.as_str()));
            prop_assert_eq!(get(&meta, "local-hostname").as_str(), Some(hostname.as_str()));

            prop_assert!(user.starts_with("#cloud-config\n"));
            let user = yaml(&user)?;
            prop_assert_eq!(keys(&user), ["hostname", "manage_etc_hosts", "ssh_pwauth", "users"]);
            prop_assert_eq!(get(&user, "hostname").as_str(), Some(hostname.as_str()));
            prop_assert_eq!(get(&user, "manage_etc_hosts").as_bool(), Some(true));
            prop_assert_eq!(get(&user, "ssh_pwauth").as_bool(), Some(false));
            let users = get(&user, "users").as_sequence().unwrap();
            prop_assert_eq!(users.len(), 1);
            let account = &users[0];
            let fields = ["name", "sudo", "shell", "lock_passwd", "ssh_authorized_keys"];
            prop_assert_eq!(keys(account), fields);
            prop_assert_eq!(get(account, "name").as_str(), Some(os_user.as_str()));
            prop_assert_eq!(get(account, "sudo").as_str(), Some("ALL=(ALL) NOPASSWD:ALL"));
            prop_assert_eq!(get(account, "shell").as_str(), Some("/bin/bash"));
            prop_assert_eq!(get(account, "lock_passwd").as_bool(), Some(true));
            let keys: Vec<&str> = get(account, "ssh_authorized_keys")
                .as_sequence()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            prop_assert_eq!(keys, ssh_keys.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
