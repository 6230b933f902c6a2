//! Wire timestamps to and from the milliseconds the domain keeps.

use exitnet_proto::Timestamp;

pub fn to_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn from_timestamp(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// A timestamp from a caller or peer: nanos within 0..1e9 and the time within
/// the years 0001–9999 (as protobuf's Timestamp requires), in milliseconds.
pub fn checked_timestamp(field: &str, ts: &Timestamp) -> Result<i64, crate::error::FieldError> {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(crate::error::FieldError::new(
            field,
            "nanos must be between 0 and 999,999,999",
        ));
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(crate::error::FieldError::new(
            field,
            "must be between the years 0001 and 9999",
        ));
    }
    Ok(from_timestamp(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_from_outside_are_bounded() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert!(checked_timestamp("t", &ts(1_800_000_000, 5)).is_ok());
        for bad in [
            ts(i64::MIN, 0),
            ts(i64::MAX, 0),
            ts(-62_135_596_801, 0),
            ts(253_402_300_800, 0),
            ts(0, -1),
            ts(0, 2_000_000_000),
        ] {
            let e = checked_timestamp("terms.valid_from", &bad).unwrap_err();
            assert!(e.to_string().starts_with("terms.valid_from"), "{e}");
        }
    }
}
