//! The code lists of the protocol as `exitnetctl` spells them (lowercase,
//! without the enum's prefix): the allowed values of flags, shown in `--help`
//! and in the error for a value that is not one of them. A unit test keeps
//! each list equal to its protobuf enum.

use clap::builder::PossibleValuesParser;

pub const NEED_AREAS: &[&str] = &[
    "functional_reintegration",
    "social_reintegration",
    "cognitive",
    "mental_health",
    "security",
];
pub const SERVICES: &[&str] = &[
    "housing",
    "relocation",
    "employment_support",
    "education_support",
    "tattoo_removal",
    "financial_aid",
    "administrative_help",
    "family_support",
    "pro_social_network",
    "mentoring",
    "identity_work",
    "isolation_stigma",
    "anger_management",
    "critical_thinking",
    "world_view",
    "ideology_questioning",
    "dialogue",
    "trauma_ptsd",
    "substance_abuse",
    "psychiatric_care",
    "cbt",
    "retaliation_risk_assessment",
    "safety_planning",
    "police_liaison",
    "protected_identity",
];
pub const URGENCIES: &[&str] = &["routine", "soon", "urgent"];
pub const AGE_BANDS: &[&str] = &[
    "under_15",
    "15_17",
    "18_24",
    "25_34",
    "35_49",
    "50_and_over",
];
pub const GENDERS: &[&str] = &["female", "male", "diverse", "undisclosed"];
pub const SETTINGS: &[&str] = &["prison", "probation", "open", "open_with_justice_link"];
pub const IDEOLOGICAL_CONTEXTS: &[&str] = &[
    "far_right",
    "far_left",
    "religiously_motivated",
    "single_issue",
    "mixed_or_unclear",
    "other",
];
pub const RISK_LEVELS: &[&str] = &["low", "moderate", "high", "not_assessed"];
pub const PURPOSES: &[&str] = &[
    "exit_support",
    "service_provision",
    "risk_assessment",
    "evaluation_statistics",
    "other",
];
pub const DATA_CATEGORIES: &[&str] = &[
    "age_band",
    "gender",
    "languages",
    "setting",
    "ideological_context",
    "risk_level",
    "security_considerations",
    "needs_narrative",
];
pub const RESTRICTIONS: &[&str] = &[
    "no_onward_sharing",
    "not_for_criminal_investigation",
    "not_for_immigration_enforcement",
];
pub const COLLECTION_METHODS: &[&str] = &["written", "verbal_witnessed", "digital"];
pub const DECLINE_REASONS: &[&str] = &[
    "no_capacity",
    "outside_mandate",
    "not_eligible",
    "safety_concern",
    "duplicate",
    "consent_insufficient",
    "client_declined_contact",
    "other",
];
pub const FAILURE_REASONS: &[&str] = &[
    "client_unreachable",
    "client_withdrew",
    "client_moved",
    "safety_incident",
    "undeliverable",
    "refused_by_receiver",
    "other",
];
pub const PROGRESS: &[&str] = &["none", "some", "substantial"];
pub const ROLES: &[&str] = &["case_manager", "supervisor", "auditor", "system"];

/// A clap parser accepting exactly `values` (clap names the flag and lists
/// the values when another is given).
pub fn one_of(values: &'static [&'static str]) -> PossibleValuesParser {
    PossibleValuesParser::new(values.iter().copied())
}

/// Looks a code name up in a protobuf enum: `trauma_ptsd` → SERVICE_TRAUMA_PTSD.
pub fn to_pb<E>(
    flag: &str,
    prefix: &str,
    name: &str,
    from_str: impl Fn(&str) -> Option<E>,
    to_i32: impl Fn(E) -> i32,
) -> anyhow::Result<i32> {
    from_str(&format!("{prefix}{}", name.to_ascii_uppercase()))
        .map(to_i32)
        .ok_or_else(|| anyhow::anyhow!("{flag}: `{name}` is not a known value"))
}

/// Every name of a protobuf enum (UNSPECIFIED left out), in the enum's order.
pub fn all_names<E: TryFrom<i32>>(prefix: &str, name: impl Fn(E) -> &'static str) -> Vec<String> {
    (1..1000)
        .filter_map(|v| E::try_from(v).ok())
        .map(|e| crate::output::code_name(name(e), prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use exitnet_proto::pb;

    fn same(list: &[&str], names: Vec<String>) {
        assert_eq!(list, names.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn the_lists_are_the_protocol_enums() {
        same(
            NEED_AREAS,
            all_names("NEED_AREA_", |e: pb::NeedArea| e.as_str_name()),
        );
        same(
            SERVICES,
            all_names("SERVICE_", |e: pb::Service| e.as_str_name()),
        );
        same(
            URGENCIES,
            all_names("URGENCY_", |e: pb::Urgency| e.as_str_name()),
        );
        same(
            AGE_BANDS,
            all_names("AGE_BAND_", |e: pb::AgeBand| e.as_str_name()),
        );
        same(
            GENDERS,
            all_names("GENDER_", |e: pb::Gender| e.as_str_name()),
        );
        same(
            SETTINGS,
            all_names("SETTING_", |e: pb::Setting| e.as_str_name()),
        );
        same(
            IDEOLOGICAL_CONTEXTS,
            all_names("IDEOLOGICAL_CONTEXT_", |e: pb::IdeologicalContext| {
                e.as_str_name()
            }),
        );
        same(
            RISK_LEVELS,
            all_names("RISK_LEVEL_", |e: pb::RiskLevel| e.as_str_name()),
        );
        same(
            PURPOSES,
            all_names("PURPOSE_", |e: pb::Purpose| e.as_str_name()),
        );
        same(
            DATA_CATEGORIES,
            all_names("DATA_CATEGORY_", |e: pb::DataCategory| e.as_str_name()),
        );
        same(
            RESTRICTIONS,
            all_names("RESTRICTION_", |e: pb::Restriction| e.as_str_name()),
        );
        same(
            COLLECTION_METHODS,
            all_names("COLLECTION_METHOD_", |e: pb::CollectionMethod| {
                e.as_str_name()
            }),
        );
        same(
            DECLINE_REASONS,
            all_names("DECLINE_REASON_", |e: pb::DeclineReason| e.as_str_name()),
        );
        same(
            FAILURE_REASONS,
            all_names("FAILURE_REASON_", |e: pb::FailureReason| e.as_str_name()),
        );
        same(
            PROGRESS,
            all_names("PROGRESS_", |e: pb::Progress| e.as_str_name()),
        );
    }

    #[test]
    fn names_map_to_the_enum() {
        let v = to_pb(
            "--service",
            "SERVICE_",
            "trauma_ptsd",
            pb::Service::from_str_name,
            |e| e as i32,
        )
        .unwrap();
        assert_eq!(v, pb::Service::TraumaPtsd as i32);
        let e = to_pb(
            "--service",
            "SERVICE_",
            "banana",
            pb::Service::from_str_name,
            |e| e as i32,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--service: `banana`"), "{e}");
    }
}
