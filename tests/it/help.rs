//! Snapshots of the text people see: every `--help`, and the usage errors.

use crate::fixtures::bin::Bsp;

fn paths(cmd: &clap::Command, prefix: Vec<String>, all: &mut Vec<Vec<String>>) {
    all.push(prefix.clone());
    for sub in cmd.get_subcommands() {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_owned());
        paths(sub, path, all);
    }
}

#[test]
fn every_help_text() {
    let bsp = Bsp::new();
    let mut all = Vec::new();
    paths(&basphere::cli::command(), Vec::new(), &mut all);
    let mut text = String::new();
    for path in all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = bsp.run(&args).success();
        text.push_str(&format!("$ basphere {}\n{}\n", args.join(" "), run.stdout));
    }
    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("help__help", text);
    });
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
    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("help__usage_errors", text);
    });
}
