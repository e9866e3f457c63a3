//! The `Date` header every response carries (RFC 9110 6.6.1: an origin with a clock must
//! send one, and a proxy forwarding a response without one must add it), as an
//! IMF-fixdate: `Sat, 05 Dec 2026 08:43:05 GMT`. Rendered at most once a second per
//! thread; every other response copies the cached line.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `date: Sat, 05 Dec 2026 08:43:05 GMT\r\n`
const LINE_LEN: usize = 37;

thread_local! {
    /// The second last rendered and its header line.
    static LINE: RefCell<(u64, [u8; LINE_LEN])> = const { RefCell::new((u64::MAX, [0; LINE_LEN])) };
}

/// Appends the `date` header line for now.
pub fn write_date_header(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LINE.with(|cell| {
        let mut line = cell.borrow_mut();
        if line.0 != secs {
            let mut rendered = Vec::with_capacity(LINE_LEN);
            render_line(secs, &mut rendered);
            if let Ok(fixed) = <[u8; LINE_LEN]>::try_from(rendered.as_slice()) {
                *line = (secs, fixed);
            }
        }
        out.extend_from_slice(&line.1);
    });
}

/// Civil date (year, month 1-12, day 1-31) of a day counted from 1970-01-01 (Howard
/// Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn render_line(secs: u64, out: &mut Vec<u8>) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[(days % 7) as usize];
    let _ = write!(
        out,
        "date: {weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT\r\n",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_imf_fixdate() {
        let mut out = Vec::new();
        render_line(1_796_460_185, &mut out);
        assert_eq!(out, b"date: Sat, 05 Dec 2026 08:43:05 GMT\r\n");
        out.clear();
        render_line(0, &mut out);
        assert_eq!(out, b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        out.clear();
        // A leap day.
        render_line(951_782_400, &mut out);
        assert_eq!(out, b"date: Tue, 29 Feb 2000 00:00:00 GMT\r\n");
    }

    #[test]
    fn the_cached_line_is_well_formed() {
        let mut out = Vec::new();
        write_date_header(&mut out);
        assert_eq!(out.len(), LINE_LEN);
        assert!(out.starts_with(b"date: ") && out.ends_with(b" GMT\r\n"));
    }
}
