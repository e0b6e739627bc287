//! Waiting-room tickets and passes: HMAC-SHA256-signed tokens bound to a drop and an identity,
//! with an expiry and the id of the key that signed them, so keys can rotate.
//!
//! A token is `<hex payload>.<hex tag>`; the payload is
//! `version · kind · key id · expires_at (ms) · serial · identity digest (16 bytes) · drop id`.
//! The tag is HMAC-SHA256 over the payload, compared in constant time. Nothing about the shopper
//! is readable beyond a digest of the identity.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{DropId, Timestamp, hex};

const VERSION: u8 = 1;
/// Bytes of the identity digest kept in a token: enough to tell identities apart, short enough
/// to keep tokens short.
const IDENTITY_BYTES: usize = 16;
/// version + kind + key id + expiry + serial + identity.
const FIXED_BYTES: usize = 1 + 1 + 1 + 8 + 8 + IDENTITY_BYTES;

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A place in the queue; the serial is the position.
    Ticket = 1,
    /// Admission to checkout; the serial is the pass number.
    Pass = 2,
}

/// A shopper's identity as tokens carry it: a digest, so a token reveals nothing about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity([u8; IDENTITY_BYTES]);

impl Identity {
    /// The identity named `name` (a customer id, a trusted header's value).
    pub fn of(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        Self(
            digest[..IDENTITY_BYTES]
                .try_into()
                .expect("a SHA-256 digest is longer"),
        )
    }

    /// A 64-bit key for tables of identities.
    pub fn key(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("eight bytes"))
    }
}

/// A token whose signature and expiry hold, with what it is bound to still to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// What it grants.
    pub claims: Claims,
    /// The drop it was issued for.
    pub drop_id: String,
    /// The shopper it was issued to.
    pub identity: Identity,
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Ticket or pass.
    pub kind: TokenKind,
    /// Position (ticket) or pass number (pass).
    pub serial: u64,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token floodgate could have made.
    #[error("not a token")]
    Malformed,
    /// Signed with a key this node does not hold.
    #[error("signed with an unknown key")]
    UnknownKey,
    /// The signature does not match: altered or forged.
    #[error("the signature does not match")]
    Forged,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// For another drop, identity or kind.
    #[error("issued for another drop, shopper or purpose")]
    Mismatch,
}

/// Signs and checks tokens; holds the current key and the ones still accepted.
#[derive(Clone)]
pub struct TokenKeys {
    /// `(key id, key)`, the signing key first.
    keys: Vec<(u8, Vec<u8>)>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        formatter
            .debug_struct("TokenKeys")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Signs with `current` (id, secret); still accepts tokens signed with `previous` ones.
    pub fn new(current: (u8, Vec<u8>), previous: Vec<(u8, Vec<u8>)>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Self { keys }
    }

    /// A token of `kind` for `drop_id` and `identity`.
    pub fn sign(
        &self,
        kind: TokenKind,
        drop_id: &DropId,
        identity: &Identity,
        serial: u64,
        expires_at: Timestamp,
    ) -> String {
        let (key_id, key) = &self.keys[0];
        let mut payload = Vec::with_capacity(FIXED_BYTES + drop_id.as_str().len());
        payload.push(VERSION);
        payload.push(kind as u8);
        payload.push(*key_id);
        payload.extend_from_slice(&expires_at.unix_millis().to_be_bytes());
        payload.extend_from_slice(&serial.to_be_bytes());
        payload.extend_from_slice(&identity.0);
        payload.extend_from_slice(drop_id.as_str().as_bytes());
        let tag = tag(key, &payload);
        format!("{}.{}", hex::encode(&payload), hex::encode(&tag))
    }

    /// Signs a short value (a visitor id) with the current key: `<value>.<key id>.<tag>`.
    /// The value must not contain `.`.
    pub fn sign_value(&self, value: &str) -> String {
        let (key_id, key) = &self.keys[0];
        format!(
            "{value}.{key_id}.{}",
            hex::encode(&tag(key, &value_message(value)))
        )
    }

    /// The value of a string made by [`Self::sign_value`], if its tag checks with a known key.
    pub fn open_value<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let mut parts = signed.split('.');
        let (value, key_id, presented) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let key_id: u8 = key_id.parse().ok()?;
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, key)| key)?;
        let presented = hex::decode(presented)?;
        bool::from(tag(key, &value_message(value)).as_slice().ct_eq(&presented)).then_some(value)
    }

    /// Checks `token` for `kind`, `drop_id` and `identity` at `now`.
    pub fn verify(
        &self,
        token: &str,
        kind: TokenKind,
        drop_id: &DropId,
        identity: &Identity,
        now: Timestamp,
    ) -> Result<Claims, TokenError> {
        let opened = self.open(token, kind, now)?;
        if opened.drop_id != drop_id.as_str() || opened.identity != *identity {
            return Err(TokenError::Mismatch);
        }
        Ok(opened.claims)
    }

    /// Checks `token`'s signature, kind and expiry, and says whom and what it was issued for.
    pub fn open(&self, token: &str, kind: TokenKind, now: Timestamp) -> Result<Opened, TokenError> {
        let (payload, presented) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = hex::decode(payload).ok_or(TokenError::Malformed)?;
        let presented = hex::decode(presented).ok_or(TokenError::Malformed)?;
        if payload.len() < FIXED_BYTES || payload[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == payload[2])
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey)?;
        if !bool::from(tag(key, &payload).as_slice().ct_eq(&presented)) {
            return Err(TokenError::Forged);
        }
        let number =
            |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("eight bytes"));
        let claims = Claims {
            kind: match payload[1] {
                1 => TokenKind::Ticket,
                2 => TokenKind::Pass,
                _ => return Err(TokenError::Malformed),
            },
            expires_at: Timestamp::from_unix_millis(number(3) as i64),
            serial: number(11),
        };
        if claims.kind != kind {
            return Err(TokenError::Mismatch);
        }
        if now >= claims.expires_at {
            return Err(TokenError::Expired);
        }
        let drop_id = String::from_utf8(payload[FIXED_BYTES..].to_vec())
            .map_err(|_| TokenError::Malformed)?;
        let identity = Identity(payload[19..FIXED_BYTES].try_into().expect("sixteen bytes"));
        Ok(Opened {
            claims,
            drop_id,
            identity,
        })
    }
}

/// A signed value's message, kept apart from every token payload (which starts with a version
/// byte, never `v`).
fn value_message(value: &str) -> Vec<u8> {
    [b"value:".as_slice(), value.as_bytes()].concat()
}

fn tag(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
    const LATER: Timestamp = Timestamp::from_unix_millis(1_800_000_060_000);

    fn keys() -> TokenKeys {
        TokenKeys::new(
            (1, b"current secret".to_vec()),
            vec![(0, b"old secret".to_vec())],
        )
    }

    fn spring() -> DropId {
        DropId::parse("spring").unwrap()
    }

    #[test]
    fn a_token_verifies_for_its_drop_identity_and_kind_until_it_expires() {
        let keys = keys();
        let ticket = keys.sign(
            TokenKind::Ticket,
            &spring(),
            &Identity::of("c-1"),
            42,
            LATER,
        );
        let claims = keys
            .verify(
                &ticket,
                TokenKind::Ticket,
                &spring(),
                &Identity::of("c-1"),
                NOW,
            )
            .unwrap();
        assert_eq!((claims.serial, claims.expires_at), (42, LATER));
        let other_drop = DropId::parse("autumn").unwrap();
        for (kind, drop, identity) in [
            (TokenKind::Pass, spring(), &Identity::of("c-1")),
            (TokenKind::Ticket, other_drop, &Identity::of("c-1")),
            (TokenKind::Ticket, spring(), &Identity::of("c-2")),
        ] {
            assert_eq!(
                keys.verify(&ticket, kind, &drop, identity, NOW),
                Err(TokenError::Mismatch)
            );
        }
        assert_eq!(
            keys.verify(
                &ticket,
                TokenKind::Ticket,
                &spring(),
                &Identity::of("c-1"),
                LATER
            ),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let keys = keys();
        let pass = keys.sign(TokenKind::Pass, &spring(), &Identity::of("c-1"), 7, LATER);
        for at in 0..pass.len() {
            let mut altered = pass.clone().into_bytes();
            altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            if altered == pass {
                continue;
            }
            assert!(
                keys.verify(
                    &altered,
                    TokenKind::Pass,
                    &spring(),
                    &Identity::of("c-1"),
                    NOW
                )
                .is_err(),
                "byte {at} altered and accepted"
            );
        }
        for junk in ["", ".", "zz.zz", "00.00", &pass[..pass.len() - 1]] {
            assert!(
                keys.verify(junk, TokenKind::Pass, &spring(), &Identity::of("c-1"), NOW)
                    .is_err()
            );
        }
    }

    #[test]
    fn keys_rotate_and_a_forger_without_them_fails() {
        let old = TokenKeys::new((0, b"old secret".to_vec()), Vec::new());
        let issued_before = old.sign(TokenKind::Ticket, &spring(), &Identity::of("c-1"), 1, LATER);
        assert!(
            keys()
                .verify(
                    &issued_before,
                    TokenKind::Ticket,
                    &spring(),
                    &Identity::of("c-1"),
                    NOW
                )
                .is_ok(),
            "a previous key is still accepted"
        );
        let forger = TokenKeys::new((1, b"guessed".to_vec()), Vec::new());
        let forged = forger.sign(TokenKind::Pass, &spring(), &Identity::of("c-1"), 1, LATER);
        assert_eq!(
            keys().verify(
                &forged,
                TokenKind::Pass,
                &spring(),
                &Identity::of("c-1"),
                NOW
            ),
            Err(TokenError::Forged)
        );
        let unknown = TokenKeys::new((9, b"x".to_vec()), Vec::new());
        let token = unknown.sign(TokenKind::Pass, &spring(), &Identity::of("c-1"), 1, LATER);
        assert_eq!(
            keys().verify(
                &token,
                TokenKind::Pass,
                &spring(),
                &Identity::of("c-1"),
                NOW
            ),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn signed_values_open_with_any_known_key_and_refuse_tampering() {
        let old = TokenKeys::new((1, b"old".to_vec()), Vec::new());
        let rotated = TokenKeys::new((2, b"new".to_vec()), vec![(1, b"old".to_vec())]);
        let signed = old.sign_value("v123");
        assert_eq!(rotated.open_value(&signed), Some("v123"));
        assert_eq!(
            old.open_value(&rotated.sign_value("v9")),
            None,
            "unknown key"
        );
        assert_eq!(old.open_value(&signed.replace("v123", "v124")), None);
        assert_eq!(old.open_value("v123.1"), None);
        assert_eq!(old.open_value(&format!("{signed}.x")), None);
    }
}
