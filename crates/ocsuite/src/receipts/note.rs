//! C2SP `signed-note` and `tlog-checkpoint` text, with Ed25519 keys.
//!
//! A checkpoint body is `origin\nsize\nbase64(root)\n`. A signed note is the body, an
//! empty line, then one line per signature: `— name base64(key hash ‖ signature)`,
//! where the key hash is the first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public
//! key)`. A verifier key is written `name+hex(key hash)+base64(0x01 ‖ public key)`.
//! Written by hand: the formats are a few lines of text, and the crates that parse them
//! are young and pull in whole transparency-log clients.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

const ALG_ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

/// The four-byte id of a named Ed25519 key.
pub fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// `name+hash+key`, the form verifiers are configured with.
pub fn verifier_key(name: &str, public: &[u8; 32]) -> String {
    let mut k = vec![ALG_ED25519];
    k.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, public)),
        B64.encode(k)
    )
}

/// A verifier key parsed from its text form.
#[derive(Clone, Debug)]
pub struct VerifierKey {
    pub name: String,
    pub hash: [u8; 4],
    pub key: VerifyingKey,
}

impl VerifierKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("verifier key {s:?} is not name+hash+key"));
        };
        let raw = B64
            .decode(key)
            .map_err(|_| format!("verifier key {name}: the key is not base64"))?;
        let Some((&ALG_ED25519, public)) = raw.split_first() else {
            return Err(format!("verifier key {name}: not an Ed25519 key"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| format!("verifier key {name}: an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| format!("verifier key {name}: not a valid Ed25519 point"))?;
        let want = key_hash(name, &public);
        if hex::encode(want) != hash.to_ascii_lowercase() {
            return Err(format!(
                "verifier key {name}: its hash does not match the key"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            hash: want,
            key,
        })
    }
}

/// Signs `body` (which ends in a newline) as a note with one signature.
pub fn sign(body: &str, name: &str, key: &SigningKey) -> String {
    let public = key.verifying_key().to_bytes();
    let sig = key.sign(body.as_bytes());
    let mut blob = key_hash(name, &public).to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    format!("{body}\n{DASH}{name} {}\n", B64.encode(blob))
}

/// A note's body and which of `keys` signed it. Errors say what is wrong.
pub fn open<'a>(note: &'a str, keys: &[VerifierKey]) -> Result<(&'a str, String), String> {
    let Some(split) = note.find("\n\n") else {
        return Err("the note has no signature block".into());
    };
    let (body, sigs) = (&note[..=split], &note[split + 2..]);
    let mut unknown = Vec::new();
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        let Some(rest) = line.strip_prefix(DASH) else {
            return Err(format!(
                "signature line {line:?} does not start with an em dash"
            ));
        };
        let Some((name, b64)) = rest.rsplit_once(' ') else {
            return Err(format!("signature line {line:?} has no signature"));
        };
        let blob = B64
            .decode(b64)
            .map_err(|_| format!("signature by {name} is not base64"))?;
        if blob.len() != 4 + 64 {
            return Err(format!("signature by {name} is not an Ed25519 signature"));
        }
        let Some(k) = keys
            .iter()
            .find(|k| k.name == name && k.hash[..] == blob[..4])
        else {
            unknown.push(format!("{name}+{}", hex::encode(&blob[..4])));
            continue;
        };
        let sig = Signature::from_slice(&blob[4..])
            .map_err(|_| format!("signature by {name} is malformed"))?;
        return match k.key.verify(body.as_bytes(), &sig) {
            Ok(()) => Ok((body, format!("{}+{}", k.name, hex::encode(k.hash)))),
            Err(_) => Err(format!(
                "the signature by {name} does not match the note (the text was changed after signing)"
            )),
        };
    }
    Err(format!(
        "no signature by a trusted key (signed by {})",
        if unknown.is_empty() {
            "nobody".to_owned()
        } else {
            unknown.join(", ")
        }
    ))
}

/// A checkpoint's body.
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A parsed checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

pub fn parse_checkpoint(body: &str) -> Result<Checkpoint, String> {
    let mut lines = body.lines();
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err("a checkpoint has an origin, a size and a root hash".into());
    };
    let size: u64 = size
        .parse()
        .map_err(|_| format!("checkpoint size {size:?} is not a number"))?;
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| format!("checkpoint root {root:?} is not a base64 SHA-256 hash"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_and_tamper() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let name = "ocsuite.example/log";
        let vk = VerifierKey::parse(&verifier_key(name, &key.verifying_key().to_bytes()))
            .expect("parses");
        let body = checkpoint_body("ocsuite.example/log/ten_1", 3, &[1; 32]);
        let note = sign(&body, name, &key);
        let (b, by) = open(&note, std::slice::from_ref(&vk)).expect("verifies");
        assert_eq!(b, body);
        assert!(by.starts_with(name));
        assert_eq!(parse_checkpoint(b).map(|c| c.size), Ok(3));
        let changed = note.replacen("\n3\n", "\n4\n", 1);
        assert!(open(&changed, std::slice::from_ref(&vk)).is_err());
        let resigned = sign(&body, name, &other);
        let e = open(&resigned, &[vk]).expect_err("unknown key");
        assert!(e.contains("trusted"), "{e}");
    }
}
