//! Code lists shared by every organisation (VOCABULARY.md). Each is a closed
//! Rust enum with its wire value and its configuration name; an unknown or
//! unspecified wire value is an invalid argument naming the field.

use crate::error::FieldError;
use exitnet_proto::pb;

/// Most entries a list of codes may carry (before repeats are removed).
pub const MAX_CODES: usize = 64;

/// A list of codes from the wire: each parsed (naming `field`), at most
/// `MAX_CODES`, sorted, without repeats. The one check of every code list:
/// consents, referrals, peer policies.
pub fn code_list<T: Ord>(
    field: &str,
    values: Vec<i32>,
    parse: impl Fn(&str, i32) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    if values.len() > MAX_CODES {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_CODES} entries"),
        ));
    }
    let mut out = values
        .into_iter()
        .map(|v| parse(field, v))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

macro_rules! code_list {
    ($(#[$meta:meta])* $name:ident => $pb:ident { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The name used in configuration files and JSON output.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }

            pub fn to_pb(self) -> i32 {
                match self { $($name::$var => pb::$pb::$var as i32),+ }
            }

            pub fn from_pb(field: &str, value: i32) -> Result<Self, FieldError> {
                match pb::$pb::try_from(value) {
                    $(Ok(pb::$pb::$var) => Ok($name::$var),)+
                    _ => Err(FieldError::new(field, format!("unknown or unspecified value {value}"))),
                }
            }

            /// Like `from_pb`, but the zero value means "none".
            pub fn from_pb_optional(field: &str, value: i32) -> Result<Option<Self>, FieldError> {
                if value == 0 { Ok(None) } else { Self::from_pb(field, value).map(Some) }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown value `{s}`, expected one of {}", names.join(", ")
                    ))
                })
            }
        }
    };
}

code_list! {
    /// Sector of a member organisation.
    Sector => Sector {
        Ngo = "ngo",
        PrisonProbation = "prison_probation",
        Police = "police",
        MentalHealth = "mental_health",
        SocialServices = "social_services",
        Housing = "housing",
        Employment = "employment",
        Education = "education",
        Health = "health",
        OtherPublicBody = "other_public_body",
    }
}

code_list! {
    /// The five areas of needs (seed 001).
    NeedArea => NeedArea {
        FunctionalReintegration = "functional_reintegration",
        SocialReintegration = "social_reintegration",
        Cognitive = "cognitive",
        MentalHealth = "mental_health",
        Security = "security",
    }
}

code_list! {
    /// Services offered, grouped by need area.
    Service => Service {
        Housing = "housing",
        Relocation = "relocation",
        EmploymentSupport = "employment_support",
        EducationSupport = "education_support",
        TattooRemoval = "tattoo_removal",
        FinancialAid = "financial_aid",
        AdministrativeHelp = "administrative_help",
        FamilySupport = "family_support",
        ProSocialNetwork = "pro_social_network",
        Mentoring = "mentoring",
        IdentityWork = "identity_work",
        IsolationStigma = "isolation_stigma",
        AngerManagement = "anger_management",
        CriticalThinking = "critical_thinking",
        WorldView = "world_view",
        IdeologyQuestioning = "ideology_questioning",
        Dialogue = "dialogue",
        TraumaPtsd = "trauma_ptsd",
        SubstanceAbuse = "substance_abuse",
        PsychiatricCare = "psychiatric_care",
        Cbt = "cbt",
        RetaliationRiskAssessment = "retaliation_risk_assessment",
        SafetyPlanning = "safety_planning",
        PoliceLiaison = "police_liaison",
        ProtectedIdentity = "protected_identity",
    }
}

code_list! {
    /// Settings an organisation works in.
    Setting => Setting {
        Prison = "prison",
        Probation = "probation",
        Open = "open",
        OpenWithJusticeLink = "open_with_justice_link",
    }
}

code_list! {
    /// Why data may be processed under a consent.
    Purpose => Purpose {
        ExitSupport = "exit_support",
        ServiceProvision = "service_provision",
        RiskAssessment = "risk_assessment",
        EvaluationStatistics = "evaluation_statistics",
        Other = "other",
    }
}

code_list! {
    /// Summary fields a consent lets travel.
    DataCategory => DataCategory {
        AgeBand = "age_band",
        Gender = "gender",
        Languages = "languages",
        Setting = "setting",
        IdeologicalContext = "ideological_context",
        RiskLevel = "risk_level",
        SecurityConsiderations = "security_considerations",
        NeedsNarrative = "needs_narrative",
    }
}

code_list! {
    /// The legal ground of an exchange.
    LegalBasisKind => LegalBasisKind {
        Consent = "consent",
        Statute = "statute",
        VitalInterests = "vital_interests",
    }
}

code_list! {
    /// Restrictions that travel with the data.
    Restriction => Restriction {
        NoOnwardSharing = "no_onward_sharing",
        NotForCriminalInvestigation = "not_for_criminal_investigation",
        NotForImmigrationEnforcement = "not_for_immigration_enforcement",
    }
}

code_list! {
    /// How a consent was collected.
    CollectionMethod => CollectionMethod {
        Written = "written",
        VerbalWitnessed = "verbal_witnessed",
        Digital = "digital",
    }
}

code_list! {
    Urgency => Urgency { Routine = "routine", Soon = "soon", Urgent = "urgent" }
}

code_list! {
    AgeBand => AgeBand {
        Under15 = "under_15",
        AgeBand1517 = "15_17",
        AgeBand1824 = "18_24",
        AgeBand2534 = "25_34",
        AgeBand3549 = "35_49",
        AgeBand50AndOver = "50_and_over",
    }
}

code_list! {
    Gender => Gender { Female = "female", Male = "male", Diverse = "diverse", Undisclosed = "undisclosed" }
}

code_list! {
    IdeologicalContext => IdeologicalContext {
        FarRight = "far_right",
        FarLeft = "far_left",
        ReligiouslyMotivated = "religiously_motivated",
        SingleIssue = "single_issue",
        MixedOrUnclear = "mixed_or_unclear",
        Other = "other",
    }
}

code_list! {
    RiskLevel => RiskLevel { Low = "low", Moderate = "moderate", High = "high", NotAssessed = "not_assessed" }
}

code_list! {
    DeclineReason => DeclineReason {
        NoCapacity = "no_capacity",
        OutsideMandate = "outside_mandate",
        NotEligible = "not_eligible",
        SafetyConcern = "safety_concern",
        Duplicate = "duplicate",
        ConsentInsufficient = "consent_insufficient",
        ClientDeclinedContact = "client_declined_contact",
        Other = "other",
    }
}

code_list! {
    FailureReason => FailureReason {
        ClientUnreachable = "client_unreachable",
        ClientWithdrew = "client_withdrew",
        ClientMoved = "client_moved",
        SafetyIncident = "safety_incident",
        Undeliverable = "undeliverable",
        RefusedByReceiver = "refused_by_receiver",
        Other = "other",
    }
}

code_list! {
    /// Why a sender withdraws a referral (its name ends the audit action,
    /// `referral.withdraw.<name>`).
    WithdrawalCause => WithdrawalCause {
        SenderWithdrew = "sender",
        ConsentWithdrawn = "consent_withdrawn",
        ConsentExpired = "consent_expired",
        Retention = "retention",
    }
}

code_list! {
    Progress => Progress { None = "none", Some = "some", Substantial = "substantial" }
}

code_list! {
    /// Where a referral's purge stands: nothing to purge, a withdrawal sent
    /// and its receipt awaited, done, or given up by an administrator.
    PurgeStatus => PurgeStatus { None = "none", Pending = "pending", Done = "done", Abandoned = "abandoned" }
}

code_list! {
    /// The closed loop's states (FHIR Task, Gravity SDOH profile).
    ReferralState => ReferralState {
        Requested = "requested",
        Received = "received",
        Accepted = "accepted",
        Declined = "declined",
        InProgress = "in_progress",
        OnHold = "on_hold",
        Completed = "completed",
        Failed = "failed",
        Withdrawn = "withdrawn",
    }
}

impl Service {
    /// The need area a service belongs to.
    pub fn need_area(self) -> NeedArea {
        use Service::*;
        match self {
            Housing | Relocation | EmploymentSupport | EducationSupport | TattooRemoval
            | FinancialAid | AdministrativeHelp => NeedArea::FunctionalReintegration,
            FamilySupport | ProSocialNetwork | Mentoring | IdentityWork | IsolationStigma
            | AngerManagement => NeedArea::SocialReintegration,
            CriticalThinking | WorldView | IdeologyQuestioning | Dialogue => NeedArea::Cognitive,
            TraumaPtsd | SubstanceAbuse | PsychiatricCare | Cbt => NeedArea::MentalHealth,
            RetaliationRiskAssessment | SafetyPlanning | PoliceLiaison | ProtectedIdentity => {
                NeedArea::Security
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wire_values_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::parse(s.as_str()), Some(*s));
            assert_eq!(Service::from_pb("f", s.to_pb()), Ok(*s));
        }
        for s in Sector::ALL {
            assert_eq!(Sector::from_pb("f", s.to_pb()), Ok(*s));
        }
    }

    #[test]
    fn unspecified_and_unknown_wire_values_name_the_field() {
        let e = Sector::from_pb("profile.sector", 0).unwrap_err();
        assert_eq!(e.field, "profile.sector");
        assert!(Sector::from_pb("x", 999).is_err());
        assert_eq!(NeedArea::from_pb_optional("x", 0), Ok(None));
    }

    #[test]
    fn a_code_list_is_bounded_sorted_and_without_repeats() {
        let security = NeedArea::Security.to_pb();
        let mental = NeedArea::MentalHealth.to_pb();
        let got = code_list(
            "t.need_areas",
            vec![security, mental, security],
            NeedArea::from_pb,
        );
        let mut want = vec![NeedArea::Security, NeedArea::MentalHealth];
        want.sort();
        assert_eq!(got, Ok(want));
        let e = code_list(
            "t.need_areas",
            vec![security; MAX_CODES + 1],
            NeedArea::from_pb,
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("t.need_areas", "at most 64 entries")
        );
        assert!(code_list("t.need_areas", vec![security; MAX_CODES], NeedArea::from_pb).is_ok());
        let e = code_list("t.need_areas", vec![security, 999], NeedArea::from_pb).unwrap_err();
        assert_eq!(e.field, "t.need_areas");
    }
}
