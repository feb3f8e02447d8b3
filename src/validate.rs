//! Validated input types: everything a caller names or sizes is parsed here first.
//!
//! Values of these types are the only ones that reach SQL, XML, paths and argument
//! lists, so each parser accepts a narrow alphabet and says plainly what it wants.

use std::fmt;
use std::str::FromStr;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{Error, Result};

/// Ids that would be confusing or dangerous as tenant names.
const RESERVED_USER_IDS: &[&str] = &[
    "root",
    "admin",
    "administrator",
    "basphere",
    "bastion",
    "daemon",
    "bin",
    "sys",
    "sync",
    "nobody",
    "nogroup",
    "operator",
    "system",
    "libvirt",
    "libvirt-qemu",
    "qemu",
    "kvm",
    "sshd",
    "www-data",
    "mail",
    "postmaster",
    "support",
    "help",
    "info",
    "security",
    "abuse",
    "noreply",
    "test",
];

/// Whether `c` steers a terminal or how text reads instead of being text: a control
/// character (Cc), or a format character (Cf: bidi overrides and isolates such as
/// U+202E and U+2066..U+2069, zero-width spaces and joiners, the byte-order mark, ...).
pub fn steers(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format
}

/// Whether `text` holds a format character (Cf), which free text from a form has no use
/// for and which makes what a terminal shows differ from what is stored.
pub fn has_format_chars(text: &str) -> bool {
    text.chars()
        .any(|c| c.general_category() == GeneralCategory::Format)
}

/// Shows untrusted text inside an error message without letting it steer the terminal.
pub fn quoted(text: &str) -> String {
    const LIMIT: usize = 64;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LIMIT {
            out.push('…');
            break;
        }
        if steers(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn check_name(
    kind: &str,
    text: &str,
    first: fn(char) -> bool,
    rest: fn(char) -> bool,
    max: usize,
    rule: &str,
) -> Result<()> {
    let len = text.chars().count();
    let ok = len >= 1
        && len <= max
        && text.chars().next().is_some_and(first)
        && text.chars().skip(1).all(rest);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_with_help(
            format!("invalid {kind} `{}`", quoted(text)),
            rule.to_string(),
        ))
    }
}

fn lower_alpha(c: char) -> bool {
    c.is_ascii_lowercase()
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn lower_alnum_dash(c: char) -> bool {
    lower_alnum(c) || c == '-'
}

macro_rules! string_newtype {
    ($name:ident) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// As a command-line argument: a bad value is a usage error that states the rule.
        impl clap::builder::ValueParserFactory for $name {
            type Parser = fn(&str) -> std::result::Result<$name, String>;
            fn value_parser() -> Self::Parser {
                |s| s.parse().map_err(|e: Error| e.with_help())
            }
        }
    };
}

string_newtype!(UserId);
string_newtype!(VmName);
string_newtype!(ImageName);
string_newtype!(SnapshotName);

impl FromStr for UserId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        check_name(
            "user id",
            s,
            lower_alpha,
            lower_alnum_dash,
            32,
            "a user id is 3 to 32 characters: a lowercase letter, then lowercase letters, digits or `-`",
        )?;
        if s.len() < 3 {
            return Err(Error::invalid_with_help(
                format!("invalid user id `{s}`: too short"),
                "a user id is 3 to 32 characters: a lowercase letter, then lowercase letters, digits or `-`",
            ));
        }
        if RESERVED_USER_IDS.contains(&s) {
            return Err(Error::invalid(format!("user id `{s}` is reserved")));
        }
        Ok(UserId(s.to_owned()))
    }
}

impl UserId {
    /// For ids read back from the database, which were validated on the way in.
    pub fn trusted(s: String) -> Self {
        UserId(s)
    }
}

impl FromStr for VmName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        check_name(
            "VM name",
            s,
            lower_alpha,
            lower_alnum_dash,
            63,
            "a VM name is 1 to 63 characters: a lowercase letter, then lowercase letters, digits or `-`",
        )?;
        Ok(VmName(s.to_owned()))
    }
}

impl VmName {
    pub fn trusted(s: String) -> Self {
        VmName(s)
    }
}

impl FromStr for ImageName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        check_name(
            "image name",
            s,
            lower_alnum,
            |c| lower_alnum_dash(c) || c == '.' || c == '_',
            63,
            "an image name is 1 to 63 characters: a lowercase letter or digit, then lowercase letters, digits, `.`, `_` or `-`",
        )?;
        Ok(ImageName(s.to_owned()))
    }
}

impl ImageName {
    pub fn trusted(s: String) -> Self {
        ImageName(s)
    }
}

impl FromStr for SnapshotName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        check_name(
            "snapshot name",
            s,
            lower_alnum,
            |c| lower_alnum_dash(c) || c == '.' || c == '_',
            63,
            "a snapshot name is 1 to 63 characters: a lowercase letter or digit, then lowercase letters, digits, `.`, `_` or `-`",
        )?;
        if s.contains("..") {
            return Err(Error::invalid(format!(
                "invalid snapshot name `{s}`: `..` is not allowed"
            )));
        }
        Ok(SnapshotName(s.to_owned()))
    }
}

/// A free-text description: one line of printable characters, at most 200.
pub fn description(s: &str) -> Result<String> {
    if s.chars().count() > 200 {
        return Err(Error::invalid(
            "the description is longer than 200 characters",
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(
            "the description contains control characters",
        ));
    }
    Ok(s.to_owned())
}

/// A span of time such as `90m`, `12h`, `7d` or `4w`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub u64);

/// Nothing expires further out than ten years.
const MAX_SPAN: u64 = 3650 * 86_400;

impl FromStr for Span {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let q = Quantity {
            what: "duration",
            help: "a duration is a whole number and a unit: 90m, 12h, 7d, 4w",
            units: &[
                ("s", 1),
                ("m", 60),
                ("h", 3600),
                ("d", 86_400),
                ("w", 7 * 86_400),
            ],
            unit_hint: "s, m, h, d or w",
            ignore_case: false,
            max: MAX_SPAN,
            too_large: "longer than ten years",
        };
        q.parse(s).map(Span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, name) in [(7 * 86_400, "w"), (86_400, "d"), (3600, "h"), (60, "m")] {
            if s >= unit && s.is_multiple_of(unit) {
                return write!(f, "{}{name}", s / unit);
            }
        }
        write!(f, "{s}s")
    }
}

/// A login name inside a guest image (`debian`, `ubuntu`, ...).
pub fn os_user(s: &str) -> Result<String> {
    check_name(
        "OS user",
        s,
        |c| c.is_ascii_lowercase() || c == '_',
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        32,
        "an OS user is a POSIX login name: lowercase letters, digits, `_` or `-`, starting with a letter",
    )?;
    Ok(s.to_owned())
}

/// The bastion's public name as people type it after `ssh USER@`: a DNS name (labels
/// of letters, digits and `-`, not starting or ending with `-`) or an IP address.
pub fn host_name(s: &str) -> Result<String> {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = s.strip_suffix('.').unwrap_or(s);
    if s.parse::<std::net::IpAddr>().is_ok() || (name.len() <= 253 && name.split('.').all(label)) {
        return Ok(s.to_owned());
    }
    Err(Error::invalid_with_help(
        format!("invalid host name `{}`", quoted(s)),
        "give the name people reach the bastion by, e.g. bastion.example.org, or its address",
    ))
}

/// A simple email check: one `@`, a dot in the domain, no spaces or control characters,
/// and an address the mailer takes as a recipient.
pub fn email(s: &str) -> Result<String> {
    let bad = || Error::invalid(format!("invalid email address `{}`", quoted(s)));
    if s.len() > 254
        || s.chars()
            .any(|c| c.is_whitespace() || steers(c) || "<>\"'`,;\\()[]".contains(c))
    {
        return Err(bad());
    }
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || s.parse::<lettre::message::Mailbox>().is_err()
    {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// Sizes in binary units: `512M`, `4G`, `4GiB`, `1T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// Nothing a tenant asks for is larger than this; it also keeps arithmetic far from overflow.
const MAX_SIZE: u64 = 1024 * TIB;

impl Size {
    pub fn from_bytes(bytes: u64) -> Size {
        Size(bytes)
    }

    pub fn from_mib(mib: u64) -> Size {
        Size(mib * MIB)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn mib(self) -> u64 {
        self.0 / MIB
    }
}

impl FromStr for Size {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let q = Quantity {
            what: "size",
            help: "sizes are a whole number and a binary unit: 512M, 4G, 4GiB, 1T",
            units: &[
                ("k", KIB),
                ("kib", KIB),
                ("m", MIB),
                ("mib", MIB),
                ("g", GIB),
                ("gib", GIB),
                ("t", TIB),
                ("tib", TIB),
            ],
            unit_hint: "M, G or T",
            ignore_case: true,
            max: MAX_SIZE,
            too_large: "larger than 1024T",
        };
        q.parse(s).map(Size)
    }
}

/// "A whole number and a unit", as sizes and durations are written.
struct Quantity<'a> {
    what: &'a str,
    help: &'a str,
    /// Each unit (lowercase when `ignore_case`) and what one of it is worth.
    units: &'a [(&'a str, u64)],
    unit_hint: &'a str,
    ignore_case: bool,
    max: u64,
    too_large: &'a str,
}

impl Quantity<'_> {
    /// The value in base units: at least one unit, at most `max`.
    fn parse(&self, s: &str) -> Result<u64> {
        let invalid = |why: &str| {
            Error::invalid_with_help(
                format!("invalid {} `{}`: {why}", self.what, quoted(s)),
                self.help,
            )
        };
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits_end);
        if number.is_empty() {
            return Err(invalid("it must start with a whole number"));
        }
        if number.bytes().all(|b| b == b'0') {
            return Err(invalid("it must be greater than zero"));
        }
        if unit.is_empty() {
            return Err(invalid(&format!("a unit is needed ({})", self.unit_hint)));
        }
        let unit = if self.ignore_case {
            unit.to_ascii_lowercase()
        } else {
            unit.to_owned()
        };
        let Some(&(_, multiplier)) = self.units.iter().find(|(name, _)| *name == unit) else {
            return Err(invalid("unknown unit"));
        };
        let n: u64 = number
            .parse()
            .map_err(|_| invalid("the number is too large"))?;
        match n.checked_mul(multiplier) {
            Some(value) if value <= self.max => Ok(value),
            _ => Err(invalid(self.too_large)),
        }
    }
}

impl fmt::Display for Size {
    /// The largest binary unit that shows the size exactly, or one decimal above a TiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b == 0 {
            return f.write_str("0");
        }
        for (unit, name) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
            if b >= unit && b.is_multiple_of(unit) {
                return write!(f, "{}{name}", b / unit);
            }
        }
        for (unit, name) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
            if b >= unit {
                return write!(f, "{:.1}{name}", b as f64 / unit as f64);
            }
        }
        write!(f, "{b}B")
    }
}

/// Parses a positive count such as `--cpus 2`.
pub fn count(what: &str, s: &str, max: u32) -> Result<u32> {
    let n: u32 = s.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} `{}`: expected a whole number",
            quoted(s)
        ))
    })?;
    if n == 0 || n > max {
        return Err(Error::invalid(format!(
            "invalid {what} `{n}`: expected 1 to {max}"
        )));
    }
    Ok(n)
}

/// Parses a count that may be zero, such as `--keep-last 0`.
pub fn whole_number(what: &str, s: &str) -> Result<u64> {
    s.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} `{}`: expected a whole number",
            quoted(s)
        ))
    })
}

/// An SSH public key in OpenSSH format, checked and reduced to `type base64 [comment]`.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub algorithm: String,
    /// `type base64`, without the comment.
    pub openssh: String,
    pub comment: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

const MIN_RSA_BITS: usize = 3072;

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let text = s.trim();
        if text.contains("PRIVATE KEY") {
            return Err(Error::invalid_with_help(
                "this is a private key, which must never leave your machine",
                "give the public key instead: the `.pub` file, e.g. ~/.ssh/id_ed25519.pub",
            ));
        }
        if text.lines().count() > 1 {
            return Err(Error::invalid("expected one SSH public key on one line"));
        }
        if text.len() > 16 * 1024 {
            return Err(Error::invalid("SSH public key is too long"));
        }
        let key = ssh_key::PublicKey::from_openssh(text).map_err(|e| {
            Error::invalid_with_help(
                format!("not a valid SSH public key: {e}"),
                "paste the whole line of the `.pub` file: `ssh-ed25519 AAAA... comment`",
            )
        })?;
        let algorithm = match key.key_data() {
            ssh_key::public::KeyData::Ed25519(_) => "ssh-ed25519".to_owned(),
            ssh_key::public::KeyData::Ecdsa(_) => key.algorithm().as_str().to_owned(),
            ssh_key::public::KeyData::Rsa(rsa) => {
                // A modulus of zero or below has no bits: no key at all.
                let n = rsa.n.as_positive_bytes().unwrap_or_default();
                let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(Error::invalid_with_help(
                        format!("RSA key of {bits} bits is too weak"),
                        "use an ed25519 key (`ssh-keygen -t ed25519`) or RSA of 3072 bits or more",
                    ));
                }
                "ssh-rsa".to_owned()
            }
            other => {
                return Err(Error::invalid_with_help(
                    format!("SSH key type `{}` is not allowed", other.algorithm()),
                    "allowed types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa (3072 bits or more)",
                ))
            }
        };
        let comment: String = key
            .comment()
            .chars()
            .filter(|c| !steers(*c))
            .take(100)
            .collect();
        let mut bare = key.clone();
        bare.set_comment("");
        let openssh = bare
            .to_openssh()
            .map_err(|e| Error::invalid(format!("cannot encode SSH public key: {e}")))?;
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        Ok(PublicKey {
            algorithm,
            openssh: openssh.trim().to_owned(),
            comment,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for ok in ["abc", "alice", "a-1", "x23456789012345678901234567890ab"] {
            assert!(ok.parse::<UserId>().is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "Alice",
            "al ice",
            "../x",
            "root",
            "a_b",
            "é",
            "",
            "x234567890123456789012345678901ab",
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vm_names() {
        assert!("web1".parse::<VmName>().is_ok());
        assert!("w".parse::<VmName>().is_ok());
        let long = "a".repeat(64);
        for bad in [
            "1web",
            "web_1",
            "web.1",
            "../etc",
            "we\"b",
            "<w>",
            "w&",
            "a b",
            "wéb",
            "\x1b[31m",
            long.as_str(),
        ] {
            assert!(bad.parse::<VmName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!("512M".parse::<Size>().unwrap().bytes(), 512 * MIB);
        assert_eq!("4G".parse::<Size>().unwrap().bytes(), 4 * GIB);
        assert_eq!("4GiB".parse::<Size>().unwrap().bytes(), 4 * GIB);
        assert_eq!("1T".parse::<Size>().unwrap().bytes(), TIB);
        assert_eq!("2g".parse::<Size>().unwrap().bytes(), 2 * GIB);
        for bad in [
            "0",
            "0G",
            "-1G",
            "99999T",
            "4X",
            "4",
            "G",
            "1.5G",
            "",
            " ",
            "18446744073709551616G",
        ] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert_eq!(Size::from_bytes(96 * GIB).to_string(), "96G");
        assert_eq!(Size::from_bytes(1536 * MIB).to_string(), "1536M");
    }

    #[test]
    fn snapshot_names_and_spans() {
        for ok in ["pre-upgrade", "20261121-101500", "v1.2_rc", "0"] {
            assert!(ok.parse::<SnapshotName>().is_ok(), "{ok}");
        }
        let long = "a".repeat(200);
        for bad in [
            "a/b",
            "..",
            "a..b",
            "-a",
            ".a",
            "a'b",
            "a\"b",
            "<a>",
            "a&b",
            "Ab",
            "sn\u{e4}p",
            "",
            long.as_str(),
        ] {
            assert!(bad.parse::<SnapshotName>().is_err(), "{bad}");
        }
        assert_eq!("90m".parse::<Span>().unwrap().0, 5400);
        assert_eq!("7d".parse::<Span>().unwrap().0, 604_800);
        assert_eq!("4w".parse::<Span>().unwrap().to_string(), "4w");
        for bad in ["0", "0d", "-1d", "7x", "99999999d", "7", "d", "1.5h", "7D"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("a@example.com").is_ok());
        for bad in [
            "a", "a@b", "@b.c", "a@b..c", "a b@c.d", "a@b.c\n", "<a@b.c>",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    /// The mailer could never send to these, so a signup with one would wait forever.
    #[test]
    fn emails_the_mailer_cannot_take_are_refused() {
        for bad in ["a@-.a", "a:b@example.com", "a@b.c-"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(email("a.b+c@mail.example.com").is_ok());
    }

    /// An RSA key with an empty modulus panicked (0 bits less 8); one with a negative
    /// modulus passed as 3072 bits.
    #[test]
    fn rsa_keys_without_a_positive_modulus_are_refused() {
        use base64::Engine;
        let key = |n: &[u8]| {
            let mut blob = Vec::new();
            for part in [&b"ssh-rsa"[..], &[1, 0, 1], n] {
                blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
                blob.extend_from_slice(part);
            }
            let base64 = base64::engine::general_purpose::STANDARD.encode(&blob);
            format!("ssh-rsa {base64}").parse::<PublicKey>()
        };
        assert!("ssh-rsa AAAAB3NzaC1yc2EAAAAAAAAAAA=="
            .parse::<PublicKey>()
            .is_err());
        let mut negative = vec![0u8; 384];
        negative[0] = 0x80;
        assert!(key(&negative).is_err());
        negative[0] = 0x7f;
        assert!(key(&negative).is_err(), "3071 bits");
        let mut positive = vec![0u8; 385];
        positive[1] = 0x80;
        assert_eq!(key(&positive).unwrap().algorithm, "ssh-rsa");
    }

    #[test]
    fn quoted_neutralises_control_characters() {
        assert_eq!(quoted("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
    }

    /// Bidi overrides and zero-width characters passed through: `admin signups` could
    /// show `moc.elpmaxe@evil` reversed, or two ids that look alike.
    #[test]
    fn quoted_neutralises_format_characters() {
        let text = "a\u{202e}b\u{200b}c\u{2066}d\u{2069}e\u{feff}f\u{ad}g";
        assert_eq!(
            quoted(text),
            "a\\u{202e}b\\u{200b}c\\u{2066}d\\u{2069}e\\u{feff}f\\u{ad}g"
        );
        assert_eq!(quoted("naïve 東京"), "naïve 東京", "letters are kept");
    }

    #[test]
    fn emails_and_key_comments_hold_no_format_characters() {
        for bad in [
            "a\u{200b}@example.com",
            "a@exa\u{202e}mple.com",
            "\u{feff}a@b.example",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl al\u{202e}ice\u{200b}@lap\u{2066}top";
        assert_eq!(line.parse::<PublicKey>().unwrap().comment, "alice@laptop");
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::testing::{any_text, config, key_line_like, text_near};
    use proptest::prelude::*;
    use proptest::sample::select;

    /// The characters of names, a few that are not, and some that look alike.
    const NAMEISH: &str = "abcmxyz0189-._A/ é";

    /// `s` reads the same to a shell, in XML and in a JSON or YAML string: nothing to quote.
    fn inert(s: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(shell_words::quote(s), s, "a shell would need it quoted");
        prop_assert_eq!(crate::virt::xml::escape(s), s, "XML would need it escaped");
        prop_assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        Ok(())
    }

    /// `s` is `min..=max` characters, the first allowed by `first`, the others by `rest`.
    fn follows(s: &str, min: usize, max: usize, first: &str, rest: &str) -> bool {
        let n = s.chars().count();
        (min..=max).contains(&n)
            && s.chars().next().is_some_and(|c| first.contains(c))
            && s.chars().skip(1).all(|c| rest.contains(c))
    }

    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    const LOWER_DIGIT: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
    const LOWER_DIGIT_DASH: &str = "abcdefghijklmnopqrstuvwxyz0123456789-";
    const IMAGE_REST: &str = "abcdefghijklmnopqrstuvwxyz0123456789-._";

    /// Names of every kind, most of them close to valid, some of them valid.
    fn name_like() -> impl Strategy<Value = String> {
        prop_oneof![text_near(NAMEISH, 70), "[a-z0-9_][a-z0-9._-]{0,65}"]
    }

    fn user_id_like() -> impl Strategy<Value = String> {
        let reserved = select(RESERVED_USER_IDS).prop_map(str::to_owned);
        prop_oneof![2 => name_like(), 2 => "[a-z][a-z0-9-]{1,33}", 1 => reserved]
    }

    proptest! {
        #![proptest_config(config())]

        /// A user id is 3 to 32 of `a-z0-9-`, starting with a letter, and not reserved.
        #[test]
        fn user_ids_follow_their_rule(s in user_id_like()) {
            let rule = follows(&s, 3, 32, LOWER, LOWER_DIGIT_DASH)
                && !RESERVED_USER_IDS.contains(&s.as_str());
            prop_assert_eq!(s.parse::<UserId>().is_ok(), rule, "{:?}", s);
        }

        /// A VM name is 1 to 63 of `a-z0-9-`, starting with a letter.
        #[test]
        fn vm_names_follow_their_rule(s in name_like()) {
            let rule = follows(&s, 1, 63, LOWER, LOWER_DIGIT_DASH);
            prop_assert_eq!(s.parse::<VmName>().is_ok(), rule, "{:?}", s);
        }

        /// An image name is 1 to 63 of `a-z0-9-._`, starting with a letter or digit.
        #[test]
        fn image_names_follow_their_rule(s in name_like()) {
            let rule = follows(&s, 1, 63, LOWER_DIGIT, IMAGE_REST);
            prop_assert_eq!(s.parse::<ImageName>().is_ok(), rule, "{:?}", s);
        }

        /// A snapshot name follows the image rule, and never holds `..`.
        #[test]
        fn snapshot_names_follow_their_rule(s in name_like()) {
            let rule = follows(&s, 1, 63, LOWER_DIGIT, IMAGE_REST) && !s.contains("..");
            prop_assert_eq!(s.parse::<SnapshotName>().is_ok(), rule, "{:?}", s);
        }

        /// An OS user is 1 to 32 of `a-z0-9_-`, starting with a letter or `_`.
        #[test]
        fn os_users_follow_their_rule(s in name_like()) {
            let rest = "abcdefghijklmnopqrstuvwxyz0123456789_-";
            let rule = follows(&s, 1, 32, "abcdefghijklmnopqrstuvwxyz_", rest);
            prop_assert_eq!(os_user(&s).is_ok(), rule, "{:?}", s);
        }

        /// Every accepted name is the text given, parses back from its display, and needs
        /// no quoting in a shell, XML or YAML.
        #[test]
        fn accepted_names_round_trip_and_need_no_quoting(
            s in prop_oneof![name_like(), user_id_like()]
        ) {
            if let Ok(v) = s.parse::<UserId>() {
                prop_assert_eq!(v.as_str(), &s);
                prop_assert_eq!(v.to_string().parse::<UserId>().unwrap(), v);
                inert(&s)?;
            }
            if let Ok(v) = s.parse::<VmName>() {
                prop_assert_eq!(v.as_str(), &s);
                prop_assert_eq!(v.to_string().parse::<VmName>().unwrap(), v);
                inert(&s)?;
            }
            if let Ok(v) = s.parse::<ImageName>() {
                prop_assert_eq!(v.as_str(), &s);
                prop_assert_eq!(v.to_string().parse::<ImageName>().unwrap(), v);
                inert(&s)?;
            }
            if let Ok(v) = s.parse::<SnapshotName>() {
                prop_assert_eq!(v.as_str(), &s);
                prop_assert_eq!(v.to_string().parse::<SnapshotName>().unwrap(), v);
                inert(&s)?;
            }
            if let Ok(v) = os_user(&s) {
                prop_assert_eq!(&v, &s);
                inert(&s)?;
            }
        }

        /// A description is kept as given when it is at most 200 characters on one line.
        #[test]
        fn descriptions_are_one_printable_line(s in any_text(210)) {
            let rule = s.chars().count() <= 200 && !s.chars().any(char::is_control);
            match description(&s) {
                Ok(d) => prop_assert!(rule && d == s, "{:?}", s),
                Err(_) => prop_assert!(!rule, "{:?}", s),
            }
        }

        /// An accepted email address is one the mailer can send to, unchanged.
        #[test]
        fn accepted_emails_are_mail_recipients(
            s in prop_oneof![
                any_text(30),
                (text_near("ab1.+-_!#$%&*/=?^{|}~:é", 10), text_near("ab1.-_é", 15))
                    .prop_map(|(local, domain)| format!("{local}@{domain}")),
            ]
        ) {
            if let Ok(e) = email(&s) {
                prop_assert_eq!(&e, &s);
                let mailbox = e.parse::<lettre::message::Mailbox>();
                prop_assert!(mailbox.is_ok(), "{:?} is not a mailbox", s);
                prop_assert_eq!(mailbox.unwrap().email.to_string(), s);
            }
        }

        /// Any text is a size or refused; a size is a positive whole number of KiB up to
        /// 1024T, and what it shows parses back to it.
        #[test]
        fn sizes_round_trip(
            s in prop_oneof![
                any_text(12),
                "[ ]?[0-9]{1,21}[ ]?(k|kib|m|mib|g|gib|t|tib|K|KiB|Mib|G|GiB|T|TIB|b|B|x|)[ ]?",
            ]
        ) {
            if let Ok(size) = s.parse::<Size>() {
                let bytes = size.bytes();
                prop_assert!(bytes > 0 && bytes % KIB == 0 && bytes <= MAX_SIZE);
                prop_assert_eq!(size.to_string().parse::<Size>().unwrap(), size);
            }
        }

        /// A number with a unit, in any case, is that many of the unit when within 1024T.
        #[test]
        fn sizes_are_number_times_unit(
            n in 1u64..=2 * 1024 * 1024,
            (unit, bytes) in select(vec![
                ("K", KIB), ("kib", KIB), ("m", MIB), ("MiB", MIB),
                ("g", GIB), ("GIB", GIB), ("T", TIB), ("tib", TIB),
            ]),
        ) {
            let expected = Some(n * bytes).filter(|b| *b <= MAX_SIZE);
            prop_assert_eq!(format!("{n}{unit}").parse::<Size>().ok().map(Size::bytes), expected);
        }

        /// Every size of whole KiB up to 1024T shows as text that parses back to it.
        #[test]
        fn every_size_shows_as_a_size(kib in 1..=MAX_SIZE / KIB) {
            let size = Size::from_bytes(kib * KIB);
            prop_assert_eq!(size.to_string().parse::<Size>().unwrap(), size);
        }

        /// Any text is a span or refused; a span is 1 s to ten years, and what it shows
        /// parses back to it.
        #[test]
        fn spans_round_trip(
            s in prop_oneof![any_text(12), "[ ]?[0-9]{1,21}[ ]?(s|m|h|d|w|D|ms|)[ ]?"]
        ) {
            if let Ok(span) = s.parse::<Span>() {
                prop_assert!(span.0 > 0 && span.0 <= MAX_SPAN);
                prop_assert_eq!(span.to_string().parse::<Span>().unwrap(), span);
            }
        }

        /// Every span from 1 s to ten years shows as text that parses back to it.
        #[test]
        fn every_span_shows_as_a_span(secs in 1..=MAX_SPAN) {
            prop_assert_eq!(Span(secs).to_string().parse::<Span>().unwrap(), Span(secs));
        }

        /// A count is the whole number written, from 1 to the maximum.
        #[test]
        fn counts_are_within_their_range(
            s in prop_oneof![any_text(12), "[ ]?[+-]?[0-9]{1,12}[ ]?"],
            max in 1u32..=100,
        ) {
            let expected = s.trim().parse::<u32>().ok().filter(|n| (1..=max).contains(n));
            prop_assert_eq!(count("count", &s, max).ok(), expected);
            prop_assert_eq!(whole_number("count", &s).ok(), s.trim().parse::<u64>().ok());
        }

        /// Untrusted text quoted for a message has no control or format character and at
        /// most 64 characters and an ellipsis; text that needs neither is kept as it is.
        #[test]
        fn quoted_text_cannot_steer_a_terminal(s in any_text(80)) {
            let q = quoted(&s);
            prop_assert!(!q.chars().any(steers), "{:?}", q);
            if s.chars().count() <= 64 && !s.chars().any(steers) {
                prop_assert_eq!(q, s);
            }
        }

        /// Any key line is a key or refused; an accepted key is an allowed type, and its
        /// stored form is one line `TYPE BASE64` that parses back to the same key.
        #[test]
        fn accepted_keys_are_one_clean_line(line in key_line_like()) {
            let Ok(key) = line.parse::<PublicKey>() else { return Ok(()) };
            let allowed = [
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "ssh-rsa",
            ];
            prop_assert!(allowed.contains(&key.algorithm.as_str()), "{}", key.algorithm);
            let words: Vec<&str> = key.openssh.split(' ').collect();
            prop_assert_eq!(words.len(), 2, "{:?}", key.openssh);
            prop_assert_eq!(words[0], key.algorithm.as_str());
            let base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
            prop_assert!(words[1].bytes().all(base64));
            let comment = &key.comment;
            prop_assert!(comment.chars().count() <= 100 && !comment.chars().any(steers));
            let parsed = ssh_key::PublicKey::from_openssh(&key.openssh).unwrap();
            if let Some(rsa) = parsed.key_data().rsa() {
                let n = rsa.n.as_positive_bytes();
                let bits = n.map_or(0, |n| n.len() * 8 - n[0].leading_zeros() as usize);
                prop_assert!(bits >= MIN_RSA_BITS, "{} bits", bits);
            }
            let again: PublicKey = key.openssh.parse().unwrap();
            prop_assert_eq!(&again.openssh, &key.openssh);
            prop_assert_eq!(&again.fingerprint, &key.fingerprint);
            prop_assert_eq!(&again.algorithm, &key.algorithm);
            let fingerprint = crate::ops::key::parse_fingerprint(&key.fingerprint);
            prop_assert_eq!(fingerprint.unwrap(), key.fingerprint);
        }
    }
}
