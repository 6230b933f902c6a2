//! Code lists shared by every organisation (VOCABULARY.md). Each is a closed
//! Rust enum with its number in the protocol and its configuration name; an
//! unknown or unspecified number is an invalid argument naming the field.
//! The numbers are the protocol's (`proto/exitnet/v1/`); `wire::codes`
//! checks every one against the generated enums.

use crate::error::FieldError;

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
    ($(#[$meta:meta])* $name:ident => $pb:ident { $($var:ident = ($n:literal, $s:literal)),+ $(,)? }) => {
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

            /// The variants' names in the protocol's enum (`wire` checks
            /// that each number below is the protocol's for that name).
            pub const WIRE_NAMES: &'static [&'static str] = &[$(stringify!($var)),+];

            /// The protocol's number for this code.
            pub fn to_pb(self) -> i32 {
                match self { $($name::$var => $n),+ }
            }

            /// The code with the protocol's number `value`; 0 (unspecified)
            /// or a number this build does not know is refused, naming `field`.
            pub fn from_pb(field: &str, value: i32) -> Result<Self, FieldError> {
                match value {
                    $($n => Ok($name::$var),)+
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
        Ngo = (1, "ngo"),
        PrisonProbation = (2, "prison_probation"),
        Police = (3, "police"),
        MentalHealth = (4, "mental_health"),
        SocialServices = (5, "social_services"),
        Housing = (6, "housing"),
        Employment = (7, "employment"),
        Education = (8, "education"),
        Health = (9, "health"),
        OtherPublicBody = (10, "other_public_body"),
    }
}

code_list! {
    /// The five areas of needs (seed 001).
    NeedArea => NeedArea {
        FunctionalReintegration = (1, "functional_reintegration"),
        SocialReintegration = (2, "social_reintegration"),
        Cognitive = (3, "cognitive"),
        MentalHealth = (4, "mental_health"),
        Security = (5, "security"),
    }
}

code_list! {
    /// Services offered, grouped by need area.
    Service => Service {
        Housing = (1, "housing"),
        Relocation = (2, "relocation"),
        EmploymentSupport = (3, "employment_support"),
        EducationSupport = (4, "education_support"),
        TattooRemoval = (5, "tattoo_removal"),
        FinancialAid = (6, "financial_aid"),
        AdministrativeHelp = (7, "administrative_help"),
        FamilySupport = (20, "family_support"),
        ProSocialNetwork = (21, "pro_social_network"),
        Mentoring = (22, "mentoring"),
        IdentityWork = (23, "identity_work"),
        IsolationStigma = (24, "isolation_stigma"),
        AngerManagement = (25, "anger_management"),
        CriticalThinking = (40, "critical_thinking"),
        WorldView = (41, "world_view"),
        IdeologyQuestioning = (42, "ideology_questioning"),
        Dialogue = (43, "dialogue"),
        TraumaPtsd = (60, "trauma_ptsd"),
        SubstanceAbuse = (61, "substance_abuse"),
        PsychiatricCare = (62, "psychiatric_care"),
        Cbt = (63, "cbt"),
        RetaliationRiskAssessment = (80, "retaliation_risk_assessment"),
        SafetyPlanning = (81, "safety_planning"),
        PoliceLiaison = (82, "police_liaison"),
        ProtectedIdentity = (83, "protected_identity"),
    }
}

code_list! {
    /// Settings an organisation works in.
    Setting => Setting {
        Prison = (1, "prison"),
        Probation = (2, "probation"),
        Open = (3, "open"),
        OpenWithJusticeLink = (4, "open_with_justice_link"),
    }
}

code_list! {
    /// Why data may be processed under a consent.
    Purpose => Purpose {
        ExitSupport = (1, "exit_support"),
        ServiceProvision = (2, "service_provision"),
        RiskAssessment = (3, "risk_assessment"),
        EvaluationStatistics = (4, "evaluation_statistics"),
        Other = (5, "other"),
    }
}

code_list! {
    /// Summary fields a consent lets travel.
    DataCategory => DataCategory {
        AgeBand = (1, "age_band"),
        Gender = (2, "gender"),
        Languages = (3, "languages"),
        Setting = (4, "setting"),
        IdeologicalContext = (5, "ideological_context"),
        RiskLevel = (6, "risk_level"),
        SecurityConsiderations = (7, "security_considerations"),
        NeedsNarrative = (8, "needs_narrative"),
    }
}

code_list! {
    /// The legal ground of an exchange.
    LegalBasisKind => LegalBasisKind {
        Consent = (1, "consent"),
        Statute = (2, "statute"),
        VitalInterests = (3, "vital_interests"),
    }
}

code_list! {
    /// Restrictions that travel with the data.
    Restriction => Restriction {
        NoOnwardSharing = (1, "no_onward_sharing"),
        NotForCriminalInvestigation = (2, "not_for_criminal_investigation"),
        NotForImmigrationEnforcement = (3, "not_for_immigration_enforcement"),
    }
}

code_list! {
    /// How a consent was collected.
    CollectionMethod => CollectionMethod {
        Written = (1, "written"),
        VerbalWitnessed = (2, "verbal_witnessed"),
        Digital = (3, "digital"),
    }
}

code_list! {
    Urgency => Urgency { Routine = (1, "routine"), Soon = (2, "soon"), Urgent = (3, "urgent") }
}

code_list! {
    AgeBand => AgeBand {
        Under15 = (1, "under_15"),
        AgeBand1517 = (2, "15_17"),
        AgeBand1824 = (3, "18_24"),
        AgeBand2534 = (4, "25_34"),
        AgeBand3549 = (5, "35_49"),
        AgeBand50AndOver = (6, "50_and_over"),
    }
}

code_list! {
    Gender => Gender { Female = (1, "female"), Male = (2, "male"), Diverse = (3, "diverse"), Undisclosed = (4, "undisclosed") }
}

code_list! {
    IdeologicalContext => IdeologicalContext {
        FarRight = (1, "far_right"),
        FarLeft = (2, "far_left"),
        ReligiouslyMotivated = (3, "religiously_motivated"),
        SingleIssue = (4, "single_issue"),
        MixedOrUnclear = (5, "mixed_or_unclear"),
        Other = (6, "other"),
    }
}

code_list! {
    RiskLevel => RiskLevel { Low = (1, "low"), Moderate = (2, "moderate"), High = (3, "high"), NotAssessed = (4, "not_assessed") }
}

code_list! {
    DeclineReason => DeclineReason {
        NoCapacity = (1, "no_capacity"),
        OutsideMandate = (2, "outside_mandate"),
        NotEligible = (3, "not_eligible"),
        SafetyConcern = (4, "safety_concern"),
        Duplicate = (5, "duplicate"),
        ConsentInsufficient = (6, "consent_insufficient"),
        ClientDeclinedContact = (7, "client_declined_contact"),
        Other = (8, "other"),
    }
}

code_list! {
    FailureReason => FailureReason {
        ClientUnreachable = (1, "client_unreachable"),
        ClientWithdrew = (2, "client_withdrew"),
        ClientMoved = (3, "client_moved"),
        SafetyIncident = (4, "safety_incident"),
        Undeliverable = (5, "undeliverable"),
        RefusedByReceiver = (6, "refused_by_receiver"),
        Other = (7, "other"),
    }
}

code_list! {
    /// Why a sender withdraws a referral (its name ends the audit action,
    /// `referral.withdraw.<name>`).
    WithdrawalCause => WithdrawalCause {
        SenderWithdrew = (1, "sender"),
        ConsentWithdrawn = (2, "consent_withdrawn"),
        ConsentExpired = (3, "consent_expired"),
        Retention = (4, "retention"),
    }
}

code_list! {
    Progress => Progress { None = (1, "none"), Some = (2, "some"), Substantial = (3, "substantial") }
}

code_list! {
    /// Where a referral's purge stands: nothing to purge, a withdrawal sent
    /// and its receipt awaited, done, or given up by an administrator.
    PurgeStatus => PurgeStatus { None = (1, "none"), Pending = (2, "pending"), Done = (3, "done"), Abandoned = (4, "abandoned") }
}

code_list! {
    /// The closed loop's states (FHIR Task, Gravity SDOH profile).
    ReferralState => ReferralState {
        Requested = (1, "requested"),
        Received = (2, "received"),
        Accepted = (3, "accepted"),
        Declined = (4, "declined"),
        InProgress = (5, "in_progress"),
        OnHold = (6, "on_hold"),
        Completed = (7, "completed"),
        Failed = (8, "failed"),
        Withdrawn = (9, "withdrawn"),
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
