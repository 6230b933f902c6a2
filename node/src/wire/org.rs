//! An organisation's profile on the wire.

use crate::domain::org::*;
use crate::domain::*;
use crate::error::FieldError;
use crate::wire::time::*;
use exitnet_proto::pb;

impl OrgProfile {
    /// Reads a profile from its stored encoding (`encoded`).
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        use prost::Message;
        let p = pb::OrgProfile::decode(bytes).map_err(|e| e.to_string())?;
        Self::from_pb(p).map_err(|e| e.to_string())
    }

    /// Validates a profile received from a peer or the admin API.
    pub fn from_pb(p: pb::OrgProfile) -> Result<Self, FieldError> {
        let pb::OrgProfile {
            org_id,
            name,
            sector,
            need_areas,
            services,
            languages,
            settings,
            accepting_referrals,
            updated_at,
        } = p;
        let org_id = OrgId::parse("org_id", &org_id)?;
        org_name_check(&name)?;
        for (field, len) in [
            ("need_areas", need_areas.len()),
            ("services", services.len()),
            ("settings", settings.len()),
        ] {
            if len > MAX_LIST {
                return Err(FieldError::new(
                    field,
                    format!("at most {MAX_LIST} entries"),
                ));
            }
        }
        if languages.len() > MAX_LANGUAGES {
            return Err(FieldError::new(
                "languages",
                format!("at most {MAX_LANGUAGES} entries"),
            ));
        }
        let need_areas = need_areas
            .into_iter()
            .map(|v| NeedArea::from_pb("need_areas", v))
            .collect::<Result<Vec<_>, _>>()?;
        let services = services
            .into_iter()
            .map(|v| Service::from_pb("services", v))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = settings
            .into_iter()
            .map(|v| Setting::from_pb("settings", v))
            .collect::<Result<Vec<_>, _>>()?;
        let languages = languages
            .iter()
            .map(|l| language_tag("languages", l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            org_id,
            name,
            sector: Sector::from_pb_optional("sector", sector)?,
            need_areas: dedup_sorted(need_areas),
            services: dedup_sorted(services),
            languages: dedup_sorted(languages),
            settings: dedup_sorted(settings),
            accepting_referrals,
            updated_at_ms: updated_at.as_ref().map(from_timestamp).unwrap_or(0),
        })
    }

    /// The profile in its wire encoding: as stored, and as hashed to tell
    /// whether it changed since it was last announced.
    pub fn encoded(&self) -> Vec<u8> {
        use prost::Message;
        self.to_pb().encode_to_vec()
    }

    pub fn to_pb(&self) -> pb::OrgProfile {
        pb::OrgProfile {
            org_id: self.org_id.to_string(),
            name: self.name.clone(),
            sector: self.sector.map(Sector::to_pb).unwrap_or(0),
            need_areas: self.need_areas.iter().map(|v| v.to_pb()).collect(),
            services: self.services.iter().map(|v| v.to_pb()).collect(),
            languages: self.languages.clone(),
            settings: self.settings.iter().map(|v| v.to_pb()).collect(),
            accepting_referrals: self.accepting_referrals,
            updated_at: Some(to_timestamp(self.updated_at_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_validation_names_the_field() {
        let base = pb::OrgProfile {
            org_id: "ngo-a".into(),
            name: "Exit NGO".into(),
            ..Default::default()
        };
        assert!(OrgProfile::from_pb(base.clone()).is_ok());
        let e = OrgProfile::from_pb(pb::OrgProfile {
            name: "x".repeat(201),
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(e.field, "name");
        let e = OrgProfile::from_pb(pb::OrgProfile {
            services: vec![9999],
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(e.field, "services");
        let e = OrgProfile::from_pb(pb::OrgProfile {
            languages: vec!["en\n".into()],
            ..base
        })
        .unwrap_err();
        assert_eq!(e.field, "languages");
    }
}
