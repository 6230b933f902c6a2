//! The code lists' numbers on the wire are written beside each code in
//! `domain::codes`; this checks every one against the enums generated from
//! the protocol, both ways, so that a number written there can never differ
//! from the protocol's.

#[cfg(test)]
mod tests {
    use crate::domain::*;
    use exitnet_proto::pb;

    macro_rules! same_as_protocol {
        ($($name:ident => $pb:ident),+ $(,)?) => {$({
            let list = stringify!($name);
            for (v, ident) in $name::ALL.iter().zip($name::WIRE_NAMES) {
                let p = pb::$pb::try_from(v.to_pb())
                    .unwrap_or_else(|_| panic!("{list}::{ident}: {} is not in the protocol", v.to_pb()));
                assert_eq!(format!("{p:?}"), *ident, "{list}::{ident} has another's number");
            }
            // Every value the protocol defines is known, and only those.
            for n in -1..=300 {
                let known = pb::$pb::try_from(n).is_ok() && n != 0;
                assert_eq!($name::from_pb("f", n).is_ok(), known, "{list}: number {n}");
            }
            assert_eq!($name::WIRE_NAMES.len(), $name::ALL.len());
        })+};
    }

    #[test]
    fn every_code_has_the_protocols_number() {
        same_as_protocol!(
            Sector => Sector,
            NeedArea => NeedArea,
            Service => Service,
            Setting => Setting,
            Purpose => Purpose,
            DataCategory => DataCategory,
            LegalBasisKind => LegalBasisKind,
            Restriction => Restriction,
            CollectionMethod => CollectionMethod,
            Urgency => Urgency,
            AgeBand => AgeBand,
            Gender => Gender,
            IdeologicalContext => IdeologicalContext,
            RiskLevel => RiskLevel,
            DeclineReason => DeclineReason,
            FailureReason => FailureReason,
            WithdrawalCause => WithdrawalCause,
            Progress => Progress,
            PurgeStatus => PurgeStatus,
            ReferralState => ReferralState,
        );
    }
}
