//! The cluster scripts' replies, checked before anything is believed: a reply of the
//! wrong shape or out of range (a foreign script under our SHA, a corrupt key) is an
//! error, never a grant.

use redis::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    /// Units reserved by this call, at most `want`.
    pub granted: u64,
    /// Units used of the quota after this call, by every holder (charged and reserved).
    pub used: u64,
    /// Units charged to or reserved for this holder in all.
    pub held: u64,
}

/// The token script's reply: a decimal from 0 to `want` (printed with 17 digits, so it
/// may exceed `want` by a rounding error, no more).
pub(super) fn granted_tokens(reply: Value, want: f64) -> Option<f64> {
    let text = match reply {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        _ => return None,
    };
    let granted: f64 = text.parse().ok()?;
    let rounding = 1e-9 * want.max(1.0);
    (granted.is_finite() && granted >= 0.0 && granted <= want + rounding).then_some(granted)
}

/// The quota script's reply: `{granted, used, held, epoch}` with granted <= want, the
/// holder holding at least its own use and what was granted, and everyone's use covering
/// it.
pub(super) fn quota_grant(reply: Value, want: u64, own: u64) -> Option<(QuotaGrant, String)> {
    let Value::Array(items) = reply else {
        return None;
    };
    let [Value::Int(granted), Value::Int(used), Value::Int(held), Value::BulkString(epoch)] =
        items.as_slice()
    else {
        return None;
    };
    let granted = u64::try_from(*granted).ok().filter(|&g| g <= want)?;
    let held = u64::try_from(*held)
        .ok()
        .filter(|&h| h >= granted && h >= own)?;
    let used = u64::try_from(*used).ok().filter(|&u| u >= held)?;
    let epoch = String::from_utf8(epoch.clone()).ok()?;
    Some((
        QuotaGrant {
            granted,
            used,
            held,
        },
        epoch,
    ))
}

/// A quota read: nil (no usage yet) or a decimal count.
pub(super) fn parse_used(reply: Value) -> Option<u64> {
    match reply {
        Value::Nil => Some(0),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_token_replies_are_refused() {
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(granted_tokens(text("3.250"), 5.0), Some(3.25));
        assert_eq!(granted_tokens(text("0.000"), 0.0), Some(0.0));
        let just_over = granted_tokens(text("5.0000000000000009"), 5.0).unwrap();
        assert!(just_over > 5.0 && just_over - 5.0 < 1e-12, "{just_over}");
        assert_eq!(granted_tokens(text("6"), 5.0), None);
        assert_eq!(granted_tokens(text("-1"), 5.0), None);
        assert_eq!(granted_tokens(text("nan"), 5.0), None);
        assert_eq!(granted_tokens(Value::Nil, 5.0), None);
        assert_eq!(granted_tokens(Value::Int(3), 5.0), None);
    }

    #[test]
    fn odd_quota_replies_are_refused() {
        let reply = |g, u, h| {
            Value::Array(vec![
                Value::Int(g),
                Value::Int(u),
                Value::Int(h),
                Value::BulkString(b"gw@1:0".to_vec()),
            ])
        };
        assert_eq!(
            quota_grant(reply(3, 10, 5), 5, 2),
            Some((
                QuotaGrant {
                    granted: 3,
                    used: 10,
                    held: 5
                },
                "gw@1:0".to_string()
            ))
        );
        let no_epoch = Value::Array(vec![Value::Int(3), Value::Int(10), Value::Int(5)]);
        assert_eq!(quota_grant(no_epoch, 5, 2), None, "no epoch");
        assert_eq!(quota_grant(reply(6, 10, 6), 5, 0), None, "more than wanted");
        assert_eq!(
            quota_grant(reply(3, 10, 4), 5, 5),
            None,
            "held below own use"
        );
        assert_eq!(quota_grant(reply(3, 4, 5), 5, 2), None, "used below held");
        assert_eq!(quota_grant(reply(-1, 4, 0), 5, 0), None);
        assert_eq!(quota_grant(Value::Array(vec![Value::Int(1)]), 5, 0), None);
        assert_eq!(quota_grant(Value::Int(1), 5, 0), None);
    }

    #[test]
    fn quota_reads_accept_counts_only() {
        assert_eq!(parse_used(Value::Nil), Some(0));
        assert_eq!(parse_used(Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(parse_used(Value::BulkString(b"-1".to_vec())), None);
        assert_eq!(parse_used(Value::BulkString(b"4.5".to_vec())), None);
        assert_eq!(parse_used(Value::BulkString(vec![0xff])), None);
        assert_eq!(parse_used(Value::Array(vec![])), None);
    }
}
