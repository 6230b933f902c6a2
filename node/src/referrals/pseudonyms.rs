//! Keyed names for a client: what a peer receives instead of the local
//! reference (one per peer, unlinkable across peers), the data key of the
//! client's content here, and what a forgotten consent keeps. The key is
//! kept, wrapped by the master key, in the database (`keys::pseudonym_key`).

use crate::domain::OrgId;
use ring::hmac;

#[derive(Clone)]
pub struct Pseudonyms {
    key: hmac::Key,
}

impl Pseudonyms {
    pub fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    fn tag(&self, input: &str) -> String {
        crate::identity::hex(&hmac::sign(&self.key, input.as_bytes()).as_ref()[..16])
    }

    /// The pseudonym `peer` receives for a client: stable per peer,
    /// unlinkable across peers.
    pub fn subject(&self, subject_ref: &str, peer: &OrgId) -> String {
        self.tag(&format!("subject\0{subject_ref}\0{peer}"))
    }

    /// The name `peer` receives for a consent.
    pub fn consent_ref(&self, consent_id: &str, peer: &OrgId) -> String {
        self.tag(&format!("consent\0{consent_id}\0{peer}"))
    }

    /// The data key of a client's content at the sending node.
    pub fn outbound_key_id(&self, subject_ref: &str) -> String {
        format!(
            "{}{}",
            crate::store::SHARED_KEY_PREFIX,
            self.tag(&format!("local\0{subject_ref}"))
        )
    }

    /// What a forgotten consent keeps of `subject_ref`: a keyed digest that
    /// only someone who gives the reference again (subject access) can match.
    pub fn forgotten_ref(&self, subject_ref: &str) -> String {
        format!(
            "{}{}",
            crate::domain::consent::FORGOTTEN_PREFIX,
            self.tag(&format!("forgotten\0{subject_ref}"))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed_per_peer_and_per_purpose() {
        let a = OrgId::parse("a", "org-a").unwrap();
        let b = OrgId::parse("b", "org-b").unwrap();
        let p = Pseudonyms::new(b"key one");
        assert_eq!(p.subject("c1", &a), p.subject("c1", &a));
        assert_ne!(p.subject("c1", &a), p.subject("c1", &b));
        assert_ne!(p.subject("c1", &a), p.consent_ref("c1", &a));
        assert_ne!(
            p.subject("c1", &a),
            Pseudonyms::new(b"key two").subject("c1", &a)
        );
        assert_eq!(p.subject("c1", &a).len(), 32);
        assert!(
            p.outbound_key_id("c1")
                .starts_with(crate::store::SHARED_KEY_PREFIX)
        );
        assert!(
            p.forgotten_ref("c1")
                .starts_with(crate::domain::consent::FORGOTTEN_PREFIX)
        );
    }
}
