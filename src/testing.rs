//! What the property tests share: how hard they run, and the input they are fed.
//!
//! Inputs are arbitrary on purpose: any Unicode scalar value, control characters and
//! all, or any bytes. Strategies "near" an alphabet mix such text with text of the
//! characters a rule is about, so that accepted values come up often too.

use base64::Engine;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// 1,000 cases per property on CI (which sets `CI`), 256 elsewhere. A failure is shrunk
/// and printed; nothing is written to `proptest-regressions` files.
pub fn config() -> ProptestConfig {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(if ci { 1000 } else { 256 })
    }
}

/// Any text of up to `max` characters: every Unicode scalar value can appear.
pub fn any_text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Text mostly of `alphabet`'s characters, with any other character now and then.
pub fn text_of(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let char = prop_oneof![9 => select(chars), 1 => any::<char>()];
    vec(char, 0..=max).prop_map(String::from_iter)
}

/// Arbitrary text half the time, text mostly of `alphabet` the other half.
pub fn text_near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![any_text(max), text_of(alphabet, max)]
}

/// Any bytes, up to `max` of them.
pub fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// `bytes` as an SSH wire-format string: a 32-bit big-endian length, then the bytes.
fn wire(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An OpenSSH public key line for the wire-format `blob`, with `comment` after it.
fn key_line(algorithm: &str, blob: &[u8], comment: &str) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("{algorithm} {base64} {comment}")
}

/// A key's comment: any text, or one like `alice@laptop`.
fn comment() -> impl Strategy<Value = String> {
    prop_oneof![any_text(40), text_of("alice@laptop -", 20)]
}

/// A well-formed ed25519 key line (any 32 bytes are such a key) with any comment
/// on the same line.
pub fn ed25519_key_line() -> impl Strategy<Value = String> {
    let comment = comment().prop_map(|c| c.replace('\n', " "));
    (any::<[u8; 32]>(), comment).prop_map(|(point, comment)| {
        let mut blob = Vec::new();
        wire(&mut blob, b"ssh-ed25519");
        wire(&mut blob, &point);
        key_line("ssh-ed25519", &blob, &comment)
    })
}

/// Key lines as people paste them and as they might be forged: ed25519 and ECDSA keys,
/// RSA keys of any modulus (empty, negative, weak, strong), unknown algorithms and
/// random blobs, each with any comment.
pub fn key_line_like() -> impl Strategy<Value = String> {
    let curve = select(vec![
        ("ecdsa-sha2-nistp256", "nistp256"),
        ("ecdsa-sha2-nistp384", "nistp384"),
        ("ecdsa-sha2-nistp521", "nistp521"),
    ]);
    let point = prop_oneof![
        vec(any::<u8>(), 64..=64),
        vec(any::<u8>(), 96..=96),
        vec(any::<u8>(), 132..=132),
        any_bytes(140),
    ];
    let tag = prop_oneof![Just(4u8), any::<u8>()];
    let ecdsa = (curve, tag, point, comment()).prop_map(|((algorithm, curve), tag, point, c)| {
        let mut sec1 = vec![tag];
        sec1.extend(point);
        let mut blob = Vec::new();
        wire(&mut blob, algorithm.as_bytes());
        wire(&mut blob, curve.as_bytes());
        wire(&mut blob, &sec1);
        key_line(algorithm, &blob, &c)
    });
    let rsa_modulus = prop_oneof![
        Just(Vec::new()),
        any_bytes(8),
        vec(any::<u8>(), 380..=400),
        any_bytes(520),
    ];
    let rsa = (any_bytes(4), rsa_modulus, comment()).prop_map(|(e, n, c)| {
        let mut blob = Vec::new();
        wire(&mut blob, b"ssh-rsa");
        wire(&mut blob, &e);
        wire(&mut blob, &n);
        key_line("ssh-rsa", &blob, &c)
    });
    let algorithm = prop_oneof![
        Just("ssh-ed25519".to_owned()),
        Just("ssh-dss".to_owned()),
        Just("sk-ssh-ed25519@openssh.com".to_owned()),
        any_text(20),
    ];
    let junk = (algorithm, any_bytes(120), comment()).prop_map(|(a, bytes, c)| {
        let mut blob = Vec::new();
        wire(&mut blob, a.as_bytes());
        blob.extend(bytes);
        key_line(&a, &blob, &c)
    });
    prop_oneof![2 => ed25519_key_line(), 2 => ecdsa, 3 => rsa, 1 => junk, 1 => any_text(200)]
}
