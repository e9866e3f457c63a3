//! The wall clock in Unix seconds, in its own leaf so that signature checks (`auth`) and
//! daily quotas (`limits`) read the same clock without importing each other.

/// Unix seconds now (the gateway's clock, as the timestamp window is defined).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
