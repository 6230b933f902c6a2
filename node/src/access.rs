//! Who may see and do what with case objects (consents, referrals).
//! Deny by default; the rules in one place:
//!
//! | role | reads | writes |
//! | --- | --- | --- |
//! | case_manager | own, and the team's where teams are configured | own (and team's) |
//! | system | those of the case manager it names | as that case manager |
//! | supervisor | all | all (reassigns) |
//! | auditor | metadata of all, never case content | none |

use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::store::ListScope;

/// How much of an object a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Full,
    /// Identifiers, states and times; no client reference, no case content.
    MetadataOnly,
}

/// The case manager a call acts as; a system must name one.
pub fn acting_owner(p: &Principal) -> Result<&str> {
    match p.role {
        Role::System => p
            .on_behalf_of
            .as_deref()
            .ok_or_else(|| crate::auth::AuthError::OnBehalfOfMissing.into()),
        _ => Ok(&p.subject),
    }
}

fn owns(p: &Principal, owner: &str, team: Option<&str>) -> Result<bool> {
    let me = acting_owner(p)?;
    let same_team = p.role == Role::CaseManager && p.team.is_some() && p.team.as_deref() == team;
    Ok(me == owner || same_team)
}

/// May `p` read an object owned by `owner` (of `team`)?
pub fn read(p: &Principal, owner: &str, team: Option<&str>) -> Result<View> {
    match p.role {
        Role::Supervisor => Ok(View::Full),
        Role::Auditor => Ok(View::MetadataOnly),
        Role::CaseManager | Role::System => {
            if owns(p, owner, team)? {
                Ok(View::Full)
            } else {
                Err(Error::PermissionDenied(
                    "this object belongs to another case manager".into(),
                ))
            }
        }
    }
}

/// May `p` change an object owned by `owner` (of `team`)?
pub fn write(p: &Principal, owner: &str, team: Option<&str>) -> Result<()> {
    match p.role {
        Role::Supervisor => Ok(()),
        Role::Auditor => Err(Error::PermissionDenied(
            "auditors read; they do not change case objects".into(),
        )),
        Role::CaseManager | Role::System => {
            if owns(p, owner, team)? {
                Ok(())
            } else {
                Err(Error::PermissionDenied(
                    "this object belongs to another case manager".into(),
                ))
            }
        }
    }
}

/// May `p` create case objects (which it will own)?
pub fn create(p: &Principal) -> Result<()> {
    match p.role {
        Role::CaseManager | Role::System => acting_owner(p).map(|_| ()),
        Role::Supervisor | Role::Auditor => Err(Error::PermissionDenied(
            "only case managers (or systems acting for one) create case objects".into(),
        )),
    }
}

/// Which objects `p` may list, and how much of each it sees.
pub fn list(p: &Principal) -> Result<(ListScope, View)> {
    Ok(match p.role {
        Role::Supervisor => (ListScope::All, View::Full),
        Role::Auditor => (ListScope::All, View::MetadataOnly),
        Role::CaseManager => (
            ListScope::Owner {
                subject: p.subject.clone(),
                team: p.team.clone(),
            },
            View::Full,
        ),
        Role::System => (
            ListScope::Owner {
                subject: acting_owner(p)?.to_owned(),
                team: None,
            },
            View::Full,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, subject: &str, team: Option<&str>, obo: Option<&str>) -> Principal {
        Principal {
            subject: subject.into(),
            role,
            team: team.map(str::to_owned),
            on_behalf_of: obo.map(str::to_owned),
            expires_at_ms: None,
        }
    }

    #[test]
    fn the_table() {
        let alice = p(Role::CaseManager, "alice", Some("east"), None);
        let bob = p(Role::CaseManager, "bob", None, None);
        let carol_east = p(Role::CaseManager, "carol", Some("east"), None);
        assert_eq!(read(&alice, "alice", Some("east")).unwrap(), View::Full);
        assert!(read(&bob, "alice", Some("east")).is_err());
        assert_eq!(
            read(&carol_east, "alice", Some("east")).unwrap(),
            View::Full
        );
        assert!(write(&bob, "alice", None).is_err());
        let sys = p(Role::System, "agency", None, Some("alice"));
        assert!(write(&sys, "alice", None).is_ok());
        assert!(write(&sys, "bob", None).is_err());
        assert!(create(&p(Role::System, "agency", None, None)).is_err());
        assert_eq!(
            read(&p(Role::Auditor, "dpo", None, None), "alice", None).unwrap(),
            View::MetadataOnly
        );
        assert!(write(&p(Role::Auditor, "dpo", None, None), "alice", None).is_err());
        assert!(create(&p(Role::Supervisor, "sue", None, None)).is_err());
        assert!(write(&p(Role::Supervisor, "sue", None, None), "alice", None).is_ok());
    }
}
