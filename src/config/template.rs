//! The configuration file as basphere writes it: every setting present, with its help
//! and its default, commented out unless it is set. The package ships it as
//! `/etc/basphere/config.toml` and `admin init` writes it with the answers it was given.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Flavors, Row, Value, ROWS};
use crate::validate::Size;

/// The file with `set` (key and text form, as `BASPHERE_*` variables take them) written
/// as settings and every other key as a commented default.
pub fn template(set: &BTreeMap<&str, String>) -> String {
    let mut file = String::from(
        "# basphere's configuration. Every setting is listed with its default, commented out;\n\
         # a `BASPHERE_<KEY>` environment variable or a flag overrides what is set here.\n\
         # `basphere config` shows the settings in force and where each came from.\n",
    );
    let (top, sections): (Vec<&Row>, Vec<&Row>) = ROWS
        .iter()
        .filter(|r| r.key != "flavors")
        .partition(|r| !r.key.contains('.'));
    for row in top {
        entry(&mut file, row, row.key, set.get(row.key));
    }
    let mut current = "";
    for row in sections {
        let (section, name) = row.key.split_once('.').expect("a dotted key");
        if section != current {
            let _ = write!(file, "\n[{section}]\n");
            current = section;
        }
        entry(&mut file, row, name, set.get(row.key));
    }
    file.push_str(
        "\n# Size presets beside the built-in small, medium, large and xlarge, one table each:\n",
    );
    match set.get("flavors").map(|text| Flavors::parse(text)) {
        Some(Ok(flavors)) if !flavors.0.is_empty() => flavor_tables(&mut file, &flavors),
        _ => {
            file.push_str("# [flavors.build]\n# cpus = 8\n# memory = \"16G\"\n# disk = \"100G\"\n")
        }
    }
    file
}

/// Set flavors, one `[flavors.NAME]` table each, as the file reads them.
fn flavor_tables(file: &mut String, flavors: &Flavors) {
    for (name, flavor) in &flavors.0 {
        let memory = Size::from_mib(flavor.memory_mib).to_string();
        let disk = Size::from_bytes(flavor.disk_bytes).to_string();
        let _ = writeln!(
            file,
            "[flavors.{name}]\ncpus = {}\nmemory = {}\ndisk = {}",
            flavor.cpus,
            toml::Value::from(memory),
            toml::Value::from(disk)
        );
    }
}

fn entry(file: &mut String, row: &Row, name: &str, value: Option<&String>) {
    file.push('\n');
    for line in row.help.lines() {
        let _ = writeln!(file, "# {line}");
    }
    match value {
        Some(text) => {
            let _ = writeln!(file, "{name} = {}", literal(row, text));
        }
        None => {
            let _ = writeln!(file, "# {name} = {}", literal(row, row.default));
        }
    }
}

/// `text` as the TOML value the row reads: integers bare, lists as arrays, the rest
/// as strings.
fn literal(row: &Row, text: &str) -> String {
    match row.kind {
        "integer" if !text.is_empty() => text.to_owned(),
        "list" | "list of addresses" => {
            let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
            let items: Vec<String> = items.map(|i| toml::Value::from(i).to_string()).collect();
            format!("[{}]", items.join(", "))
        }
        _ => toml::Value::from(text).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::template;
    use crate::config::{Config, Overrides, Source, ROWS};

    fn load(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let flags = Overrides {
            file: Some(path),
            keys: vec![],
            ..Overrides::default()
        };
        Config::load(&flags, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn the_template_reads_as_the_defaults_and_names_every_key() {
        let text = template(&BTreeMap::new());
        let config = load(&text);
        for row in ROWS.iter().filter(|r| r.key != "flavors") {
            assert_eq!(config.source(row.key), Source::Default, "{}", row.key);
            let name = row.key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("# {name} = ")),
                "{} missing",
                row.key
            );
        }
        // Uncommented, every default reads back as the default it says it is.
        let (settings, flavors_example) = text.split_once("\n# Size presets").unwrap();
        assert!(flavors_example.contains("# [flavors.build]"));
        let uncommented: String = settings
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let set = load(&uncommented);
        let defaults = load("");
        for row in ROWS {
            assert_eq!(
                set.field_text(row.key),
                defaults.field_text(row.key),
                "{}",
                row.key
            );
        }
    }

    #[test]
    fn set_values_are_written_as_settings() {
        let set = BTreeMap::from([
            ("public_host", "bastion.example.org".to_owned()),
            ("serve.ssh", "0.0.0.0:2222".to_owned()),
            ("quota.cpus", "64".to_owned()),
            ("admin_emails", "a@example.org,b@example.org".to_owned()),
        ]);
        let config = load(&template(&set));
        assert_eq!(config.public_host, "bastion.example.org");
        assert_eq!(config.field_text("serve.ssh").0, "0.0.0.0:2222");
        assert_eq!(config.quota_cpus, 64);
        assert_eq!(config.admin_emails, ["a@example.org", "b@example.org"]);
        assert_eq!(config.source("quota.cpus"), Source::File);
    }

    #[test]
    fn set_flavors_are_written_as_tables() {
        let set = BTreeMap::from([("flavors", "build=8/16G/100G,tiny=1/512M/5G".to_owned())]);
        let config = load(&template(&set));
        assert_eq!(
            config.field_text("flavors").0,
            "build=8/16G/100G,tiny=1/512M/5G"
        );
    }
}
