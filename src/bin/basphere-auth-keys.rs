//! `basphere-auth-keys %u %t %k`: what sshd runs as its `AuthorizedKeysCommand`, for
//! every key a client offers. It is `basphere auth-keys` without the rest of basphere:
//! no libvirt and no command line parser are loaded, so a login that offers several keys
//! does not pay for them several times.

use std::collections::BTreeMap;
use std::io::Write;

use basphere::cli::auth_keys;
use basphere::config::{Config, Overrides};

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (exe, args) = match &args[..] {
        [flag, exe, rest @ ..] if flag == "--exe" => (Some(exe.clone()), rest),
        rest => (None, rest),
    };
    let [login, key_type, key] = args else {
        eprintln!("usage: basphere-auth-keys [--exe PATH] LOGIN KEY_TYPE KEY  (sshd's %u %t %k)");
        return 2;
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let answered = Config::load(&Overrides::default(), &env).and_then(|config| {
        let exe = match exe {
            Some(exe) => exe,
            None => auth_keys::forced_command_exe()?,
        };
        auth_keys::answer(&config, login, key_type, key, &exe)
    });
    match answered {
        Ok(answer) => {
            if let Some(note) = answer.note {
                eprintln!("basphere-auth-keys: {note}");
            }
            let mut line = answer.line;
            if !line.is_empty() && !line.ends_with('\n') {
                line.push('\n');
            }
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("basphere-auth-keys: cannot write the answer: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("basphere-auth-keys: {e}");
            1
        }
    }
}
