//! Man pages rendered from the clap definitions: `basphere.1` and one page per subcommand.

/// Every page as (file name, roff text), e.g. `("basphere-vm-list.1", ...)`.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut root = crate::cli::command();
    root.build();
    collect(&root, "basphere", &mut pages);
    pages
}

fn collect(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let page = cmd
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .expect("rendering to memory cannot fail");
    pages.push((format!("{name}.1"), roff));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        collect(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The committed pages match the code; `BASPHERE_UPDATE_MAN=1 cargo test man` rewrites them.
    #[test]
    fn man_pages_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let pages = super::pages();
        if std::env::var_os("BASPHERE_UPDATE_MAN").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "1") {
                    std::fs::remove_file(path).unwrap();
                }
            }
            for (name, text) in &pages {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let mut stale = Vec::new();
        for (name, text) in &pages {
            if std::fs::read(dir.join(name)).ok().as_deref() != Some(text.as_slice()) {
                stale.push(name.clone());
            }
        }
        let expected: std::collections::HashSet<_> = pages.iter().map(|(n, _)| n.clone()).collect();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".1") && !expected.contains(&name) {
                stale.push(format!("{name} (no such command)"));
            }
        }
        assert!(
            stale.is_empty(),
            "man pages are stale: {stale:?}; run `BASPHERE_UPDATE_MAN=1 cargo test man`"
        );
    }
}
