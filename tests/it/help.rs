//! Snapshots of the text people see: every command's `--help`, one snapshot per command
//! so that each can be reviewed on its own, and the usage errors.
//!
//! They live in `tests/it/snapshots/help__*.snap`; after changing what a command says,
//! review the diffs and accept them with `INSTA_UPDATE=always cargo test --test it help::`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::fixtures::assert_snapshot;
use crate::fixtures::bin::Bsp;

/// Every command line of the clap tree, the root (no words) first.
fn paths(cmd: &clap::Command, prefix: Vec<String>, all: &mut Vec<Vec<String>>) {
    all.push(prefix.clone());
    for sub in cmd.get_subcommands() {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_owned());
        paths(sub, path, all);
    }
}

/// The snapshot of a command line: `help__basphere` for the root, `help__vm_list`,
/// `help__admin_user_add`.
fn snapshot_name(path: &[String]) -> String {
    if path.is_empty() {
        "help__basphere".to_owned()
    } else {
        format!("help__{}", path.join("_"))
    }
}

/// Each command's help against its own snapshot. Every command is compared before the
/// test fails, so one change to a global flag shows as a diff per command (and with
/// `INSTA_UPDATE=always` rewrites them all); a snapshot of a command that is gone fails.
#[test]
fn every_help_text() {
    let bsp = Bsp::new();
    let mut all = Vec::new();
    paths(&basphere::cli::command(), Vec::new(), &mut all);
    let mut changed = Vec::new();
    for path in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = bsp.run(&args).success();
        let text = format!("$ basphere {}\n{}", args.join(" "), run.stdout);
        let name = snapshot_name(path);
        if std::panic::catch_unwind(|| assert_snapshot!(name.as_str(), text)).is_err() {
            changed.push(name);
        }
    }
    assert!(
        changed.is_empty(),
        "{} of {} help texts differ from their snapshots: {changed:?}",
        changed.len(),
        all.len()
    );

    let names: BTreeSet<String> = all.iter().map(|p| snapshot_name(p)).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots");
    let stale: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix("help__")?.strip_suffix(".snap")?;
            Some(format!("help__{name}"))
        })
        .filter(|name| name != "help__usage_errors" && !names.contains(name))
        .collect();
    assert!(
        stale.is_empty(),
        "snapshots of commands that no longer exist (delete them): {stale:?}"
    );
}

#[test]
fn usage_errors() {
    let bsp = Bsp::new();
    let cases: &[&[&str]] = &[
        &[],
        &["create-vm"],
        &["vm"],
        &["vm", "lst"],
        &["frobnicate"],
        &["create-vm", "web1", "--flavor", "small", "--cpus", "2"],
        &["admin", "user", "add", "alice"],
        &[
            "admin",
            "user",
            "add",
            "alice",
            "--email",
            "a@example.com",
            "--key",
            "k",
            "--key-file",
            "f",
        ],
        &["admin", "audit", "--limit", "many"],
        &["completions"],
    ];
    let mut text = String::new();
    for args in cases {
        let run = bsp.run(args);
        assert_eq!(run.code, 2, "{args:?}");
        text.push_str(&format!(
            "$ basphere {}\n[exit {}]\n{}{}\n",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        ));
    }
    assert_snapshot!("help__usage_errors", text);
}
