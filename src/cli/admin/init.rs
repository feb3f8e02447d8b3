//! `basphere admin init`: set a host up, from questions on a terminal or a preseed file;
//! or, with `--database-only`, make only the data directory and database.

use std::path::PathBuf;

use dialoguer::{Confirm, Input, Password, Select};

use crate::cli::sshd_config;
use crate::config::Config;
use crate::context::Context;
use crate::error::{exit, Error, Result};
use crate::ops::init::{self, host, preseed, Answers, Door, Preseed, Setup};
use crate::output::{Human, Output, Report};
use crate::validate::{self, ImageName, PublicKey, UserId};

/// Set this host up: configuration, database, first administrator, SSH front door, units
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Create the data directory and an empty database (with this installation's id), and nothing else
    #[arg(long, conflicts_with_all = ["preseed", "force"])]
    pub database_only: bool,

    /// Take the answers from this TOML file instead of asking
    #[arg(long, value_name = "FILE")]
    pub preseed: Option<PathBuf>,

    /// Change what is set up already and differs from the answers (the difference is shown first)
    #[arg(long)]
    pub force: bool,
}

const AFTER_HELP: &str = "On a terminal it asks for each answer; with --preseed it asks nothing. \
It writes the configuration file (--config, default /etc/basphere/config.toml; a dated copy \
of the file it replaces is kept), creates the data directory and database, the first \
administrator and the first image, writes /etc/ssh/sshd_config.d/basphere.conf in OpenSSH \
mode (checked with `sshd -t`, then sshd is reloaded), and enables the units where systemd \
runs the host. A second run with the same answers changes nothing; with other answers it \
shows the difference and applies it only with --force.

Every other command refuses to run without a database, so a mistyped --data-dir, or a \
volume not yet mounted, never looks like an empty installation. --database-only asks \
nothing, and leaves an existing database as it is.

Preseed (unknown keys are an error; only public_host, [ssh] door and [admin] are required):
  public_host = \"bastion.example.org\"
  network_pool = \"10.100.0.0/16\"          # each tenant gets a /24 of it
  admin_emails = [\"ops@example.org\"]      # told about new signups

  [ssh]
  door = \"embedded\"                       # or \"openssh\" (the host's sshd)
  port = 2222                             # embedded only [default: 2222]

  [smtp]                                  # optional: without it mail goes to the spool
  host = \"smtp.example.org\"
  port = 587                              # [default: by security]
  security = \"starttls\"                   # starttls, tls or none
  username = \"basphere\"
  password = \"secret\"
  from = \"basphere@example.org\"

  [admin]
  id = \"alice\"
  email = \"alice@example.org\"
  key = \"ssh-ed25519 AAAA... alice@laptop\"
  unix_user = \"alice\"                     # optional: joins the basphere-admin group

  [image]                                 # optional
  name = \"debian-12\"
  file = \"/var/cache/debian-12-genericcloud-amd64.qcow2\"
  os_user = \"debian\"                      # [default: guessed from the name]

Example:
  basphere admin init --preseed /root/basphere-preseed.toml";

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<Report> {
    if args.database_only {
        return database_only(ctx);
    }
    let preseed = match (&args.preseed, out.terminal()) {
        (Some(path), _) => Preseed::read(path)?,
        (None, Some(_)) => ask(ctx)?,
        (None, None) => {
            return Err(Error::invalid_with_help(
                "`admin init` asks its questions on a terminal, and none is attached",
                "give the answers with --preseed FILE (see `basphere admin init --help`), \
                 or make only the database with --database-only",
            ))
        }
    };
    let answers = preseed.check()?;
    let setup = Setup {
        config_path: ctx.config.path.clone(),
        drop_in_path: PathBuf::from(sshd_config::DROP_IN),
        drop_in: match answers.door {
            Door::Openssh => Some(sshd_config::text(ctx)?),
            Door::Embedded { .. } => None,
        },
        force: args.force,
    };
    let outcome = out.working("setting up", |_| init::apply(ctx, &answers, &setup))?;
    Ok(report(&outcome, &answers))
}

fn report(outcome: &init::Outcome, answers: &Answers) -> Report {
    let diff = outcome.changes.iter().map(|c| format!("  {}", c.line()));
    let mut report = if !outcome.applied {
        let mut lines = vec!["this host is set up differently:".to_owned()];
        lines.extend(diff);
        Report::new(outcome, Human::Lines(lines))
            .note("nothing changed: run again with --force to apply the difference")
            .exit(exit::CONFLICT)
    } else if outcome.changes.is_empty() && outcome.done.is_empty() {
        let line = format!(
            "nothing changed: this host is set up as the answers say ({})",
            outcome.config.display()
        );
        Report::done(outcome, line)
    } else {
        let mut lines = Vec::new();
        if !outcome.changes.is_empty() {
            lines.push("changes:".to_owned());
            lines.extend(diff);
        }
        lines.extend(outcome.done.iter().cloned());
        if let Door::Embedded { port } = answers.door {
            lines.push(format!(
                "tenants connect with `ssh -p {port} basphere@{}` once `basphere serve` runs",
                answers.public_host
            ));
        }
        Report::new(outcome, Human::Lines(lines))
    };
    for warning in &outcome.warnings {
        report = report.note(format!("warning: {warning}"));
    }
    report
}

fn database_only(ctx: &Context) -> Result<Report> {
    let done = init::database_only(ctx)?;
    let line = if done.created {
        format!(
            "created the basphere database {} (installation {})",
            done.database.display(),
            done.installation
        )
    } else {
        format!(
            "the basphere database {} already exists (installation {}); nothing changed",
            done.database.display(),
            done.installation
        )
    };
    Ok(Report::new(&done, Human::Lines(vec![line])))
}

fn answer_error(e: dialoguer::Error) -> Error {
    let dialoguer::Error::IO(e) = e;
    Error::io("cannot read the answer", e)
}

/// Asks one line, checked by `check` as it is typed in; empty only when `optional`.
fn ask_text(
    prompt: &str,
    default: Option<String>,
    optional: bool,
    check: impl Fn(&str) -> Result<()>,
) -> Result<String> {
    let term = console::Term::stderr();
    let mut input = Input::<String>::new()
        .with_prompt(prompt)
        .allow_empty(optional)
        .validate_with(|text: &String| -> std::result::Result<(), String> {
            match text.trim() {
                "" if optional => Ok(()),
                text => check(text).map_err(|e| e.with_help()),
            }
        });
    if let Some(default) = default.filter(|d| !d.is_empty()) {
        input = input.default(default);
    }
    let text = input.interact_text_on(&term).map_err(answer_error)?;
    Ok(text.trim().to_owned())
}

fn ask_yes(prompt: &str, default: bool) -> Result<bool> {
    Confirm::new()
        .with_prompt(prompt)
        .default(default)
        .interact_on(&console::Term::stderr())
        .map_err(answer_error)
}

fn ask_choice(prompt: &str, items: &[&str], default: usize) -> Result<usize> {
    Select::new()
        .with_prompt(prompt)
        .items(items)
        .default(default)
        .interact_on(&console::Term::stderr())
        .map_err(answer_error)
}

fn port(text: &str) -> Result<()> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(Error::invalid(format!(
            "`{text}` is not a port (1 to 65535)"
        ))),
    }
}

fn emails(text: &str) -> Result<()> {
    let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
    items
        .map(validate::email)
        .collect::<Result<Vec<_>>>()
        .map(drop)
}

fn say(line: &str) -> Result<()> {
    console::Term::stderr()
        .write_line(line)
        .map_err(|e| Error::io("cannot write to the terminal", e))
}

/// The questions, as a preseed: the same checks then apply to both.
fn ask(ctx: &Context) -> Result<Preseed> {
    let config = &ctx.config;
    say("Setting up basphere on this host; Ctrl-C stops without changing anything.")?;
    let public_host = ask_text(
        "Public host name (how people reach this bastion)",
        Some(config.public_host()),
        false,
        |t| validate::host_name(t).map(drop),
    )?;
    let ssh = ask_door(config)?;
    let network_pool = ask_pool(config)?;
    let smtp = ask_smtp(config)?;
    let admin_emails = ask_text(
        "Administrators' mail addresses, comma-separated (empty: none)",
        Some(config.admin_emails.join(", ")),
        true,
        emails,
    )?;
    let admin = ask_admin(config)?;
    let image = ask_image()?;
    Ok(Preseed {
        public_host,
        ssh,
        network_pool: Some(network_pool),
        admin_emails: admin_emails
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        smtp,
        admin,
        image,
    })
}

fn ask_door(config: &Config) -> Result<preseed::SshAnswer> {
    let doors = [
        "basphere's own SSH server, on a port of its own",
        "this host's OpenSSH (sshd asks basphere-auth-keys for each key)",
    ];
    let embedded = config.serve_ssh.addr();
    let door = ask_choice(
        "SSH front door for tenants",
        &doors,
        embedded.is_none() as usize,
    )?;
    if door == 1 {
        return Ok(preseed::SshAnswer {
            door: "openssh".into(),
            port: None,
        });
    }
    let default = embedded.map_or(preseed::DEFAULT_SSH_PORT, |a| a.port());
    let port = ask_text(
        "Port of basphere's SSH server",
        Some(default.to_string()),
        false,
        port,
    )?;
    Ok(preseed::SshAnswer {
        door: "embedded".into(),
        port: port.parse().ok(),
    })
}

/// The pool, asked again while it overlaps a route of the host and that is not wanted.
fn ask_pool(config: &Config) -> Result<String> {
    loop {
        let pool = ask_text(
            "Network pool (each tenant gets a /24 of it)",
            Some(config.network_pool.to_string()),
            false,
            |t| preseed::pool(t).map(drop),
        )?;
        let warnings = init::pool_warnings(&preseed::pool(&pool)?, &config.name_prefix);
        for warning in &warnings {
            say(&format!("warning: {warning}"))?;
        }
        if warnings.is_empty() || ask_yes("Use it anyway?", false)? {
            return Ok(pool);
        }
    }
}

fn ask_smtp(config: &Config) -> Result<Option<preseed::SmtpAnswer>> {
    let wanted = ask_yes(
        "Send mail through an SMTP relay? (otherwise mail is written to the spool directory)",
        config.smtp_host.is_some(),
    )?;
    if !wanted {
        return Ok(None);
    }
    let host = ask_text("SMTP host", config.smtp_host.clone(), false, |t| {
        validate::host_name(t).map(drop)
    })?;
    let securities = ["starttls", "tls", "none"];
    let security = ask_choice("SMTP security", &securities, 0)?;
    let port = ask_text("SMTP port (empty: the usual one)", None, true, port)?;
    let username = ask_text(
        "SMTP user name (empty: none)",
        config.smtp_username.clone(),
        true,
        |_| Ok(()),
    )?;
    let password = Password::new()
        .with_prompt("SMTP password (empty: none)")
        .allow_empty_password(true)
        .interact_on(&console::Term::stderr())
        .map_err(answer_error)?;
    Ok(Some(preseed::SmtpAnswer {
        host,
        port: port.parse().ok(),
        security: Some(securities[security].to_owned()),
        username: Some(username),
        password: Some(password),
        from: None,
    }))
}

fn ask_admin(config: &Config) -> Result<preseed::AdminAnswer> {
    let id = ask_text("First administrator's user id", None, false, |t| {
        t.parse::<UserId>().map(drop)
    })?;
    let email = ask_text("Their email address", None, false, |t| {
        validate::email(t).map(drop)
    })?;
    let key = ask_text(
        "Their SSH public key (the line of their .pub file)",
        None,
        false,
        |t| t.parse::<PublicKey>().map(drop),
    )?;
    let group = &config.admin_group;
    // Only where the group is there to join (the package makes it).
    let unix_user = match nix::unistd::Group::from_name(group).ok().flatten() {
        Some(_)
            if ask_yes(
                &format!("Add a Unix account of this host to the `{group}` group?"),
                false,
            )? =>
        {
            Some(ask_text("Unix account", None, false, |t| {
                host::membership(t, group).map(drop)
            })?)
        }
        _ => None,
    };
    Ok(preseed::AdminAnswer {
        id,
        email,
        key,
        unix_user,
    })
}

fn ask_image() -> Result<Option<preseed::ImageAnswer>> {
    if !ask_yes("Register a first base image?", false)? {
        return Ok(None);
    }
    let name = ask_text("Image name, e.g. debian-12", None, false, |t| {
        t.parse::<ImageName>().map(drop)
    })?;
    let file = ask_text(
        "Image file (absolute path, qcow2 or raw)",
        None,
        false,
        |t| crate::ops::image::check_file(std::path::Path::new(t)).map(drop),
    )?;
    let os_user = ask_text(
        "Login user of the image (empty: guessed from the name)",
        None,
        true,
        |t| validate::os_user(t).map(drop),
    )?;
    Ok(Some(preseed::ImageAnswer {
        name,
        file: file.into(),
        os_user: Some(os_user).filter(|u| !u.is_empty()),
    }))
}
