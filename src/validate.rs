//! Validated input types: everything a caller names or sizes is parsed here first.
//!
//! Values of these types are the only ones that reach SQL, XML, paths and argument
//! lists, so each parser accepts a narrow alphabet and says plainly what it wants.

use std::fmt;
use std::str::FromStr;

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

/// Shows untrusted text inside an error message without letting it steer the terminal.
pub fn quoted(text: &str) -> String {
    const LIMIT: usize = 64;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LIMIT {
            out.push('…');
            break;
        }
        if c.is_control() {
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

/// A simple email check: one `@`, a dot in the domain, no spaces or control characters,
/// and an address the mailer takes as a recipient.
pub fn email(s: &str) -> Result<String> {
    let bad = || Error::invalid(format!("invalid email address `{}`", quoted(s)));
    if s.len() > 254
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`,;\\()[]".contains(c))
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
            .filter(|c| !c.is_control())
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
}
