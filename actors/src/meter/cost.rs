//! The arithmetic that turns lease time into credits.
//!
//! Lease time is metered in milliseconds and charged proportionally, rounded down to a whole
//! millicredit: `cost(ms) = floor(price_per_minute × ms / 60 000)`. A hold for prepaid time
//! rounds up, so `cost(prepaid) ≤ hold` always; whatever the hold does not charge is released.

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;

fn clamp_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// Credits owed for `used_ms` of lease time: proportional, rounded down.
pub fn cost(price_per_minute: i64, used_ms: i64) -> i64 {
    let used = i128::from(used_ms.max(0));
    clamp_i64(i128::from(price_per_minute) * used / i128::from(MINUTE_MS))
}

/// Credits to hold for `prepaid_ms` of lease time: proportional, rounded up.
pub fn hold_for(price_per_minute: i64, prepaid_ms: i64) -> i64 {
    let prepaid = i128::from(prepaid_ms.max(0));
    let minute = i128::from(MINUTE_MS);
    clamp_i64((i128::from(price_per_minute) * prepaid + minute - 1) / minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_down_and_holds_round_up() {
        assert_eq!(cost(2000, 60_000), 2000);
        assert_eq!(cost(2000, 1_000), 33);
        assert_eq!(cost(2000, 29), 0);
        assert_eq!(hold_for(2000, 60_000), 2000);
        assert_eq!(hold_for(2000, 1_000), 34);
        for prepaid in [1, 999, 1_000, 6_000, 59_999, 3_600_000] {
            for price in [1, 7, 100, 2000, 12_000] {
                assert!(cost(price, prepaid) <= hold_for(price, prepaid));
                assert!(hold_for(price, prepaid) - cost(price, prepaid) <= 1);
            }
        }
    }
}
