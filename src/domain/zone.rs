//! Time-zone facts the planner relies on: parsing IANA names and turning a
//! local wall time into the instant it happens, across DST gaps and overlaps.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The tzdata release compiled into this binary (recorded with every plan).
pub const TZDATA_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// Parses an IANA zone name. Returns `None` for anything the compiled tzdata does not know.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// How a wall time mapped to an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFit {
    /// The wall time exists once.
    Exact,
    /// The wall time falls in a spring-forward gap; the instant is the first one after it.
    Gap,
    /// The wall time occurs twice (autumn overlap); the instant is the first occurrence.
    Overlap,
}

/// The instant at which `local` happens in `tz`.
///
/// A time inside a gap fires at the first instant after the gap (02:30 on the US
/// spring-forward day is 03:00 EDT); a time that occurs twice fires at the earlier one.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> (DateTime<Utc>, LocalFit) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (t.with_timezone(&Utc), LocalFit::Exact),
        LocalResult::Ambiguous(first, _) => (first.with_timezone(&Utc), LocalFit::Overlap),
        LocalResult::None => (first_instant_at_or_after(tz, local), LocalFit::Gap),
    }
}

/// The first instant whose wall time in `tz` is at or after `local`.
///
/// Offsets lie within −12:00..+14:00, so the answer lies within (local − 15h, local + 13h)
/// read as UTC; wall time is monotonic there unless two transitions fall within a day,
/// which no zone has. A binary search to the second is exact for every tzdata rule.
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let wall_at =
        |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local());
    let target = local.and_utc().timestamp();
    let mut lo = target - 15 * 3600; // wall time here is before `local`
    let mut hi = target + 13 * 3600; // wall time here is at or after `local`
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall_at(mid).is_none_or(|w| w >= local) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(local.and_utc())
}

/// Zone names that tzdata treats as canonical (not links), for benchmarks and demos.
pub fn canonical_zones() -> Vec<Tz> {
    chrono_tz::TZ_VARIANTS
        .iter()
        .copied()
        .filter(|tz| {
            let name = tz.name();
            name.contains('/')
                && !name.starts_with("Etc/")
                && !name.starts_with("US/")
                && !name.starts_with("SystemV/")
                && !name.starts_with("Canada/")
                && !name.starts_with("Brazil/")
                && !name.starts_with("Chile/")
                && !name.starts_with("Mexico/")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .unwrap()
    }

    #[test]
    fn spring_forward_gap_fires_at_first_instant_after() {
        let (t, fit) = resolve_local(chrono_tz::America::New_York, at(2026, 3, 8, 2, 30));
        assert_eq!(fit, LocalFit::Gap);
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap());
    }

    #[test]
    fn midnight_gap_in_santiago() {
        let (t, fit) = resolve_local(chrono_tz::America::Santiago, at(2026, 9, 6, 0, 15));
        assert_eq!(fit, LocalFit::Gap);
        // 00:00 -04 jumps to 01:00 -03, i.e. 04:00Z.
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 9, 6, 4, 0, 0).unwrap());
    }

    #[test]
    fn autumn_overlap_fires_at_first_occurrence() {
        let (t, fit) = resolve_local(chrono_tz::America::New_York, at(2026, 11, 1, 1, 30));
        assert_eq!(fit, LocalFit::Overlap);
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).unwrap());
    }

    #[test]
    fn lord_howe_half_hour_gap() {
        // Lord Howe springs forward 02:00 → 02:30 on the first Sunday of October.
        let (t, fit) = resolve_local(chrono_tz::Australia::Lord_Howe, at(2026, 10, 4, 2, 15));
        assert_eq!(fit, LocalFit::Gap);
        assert_eq!(
            t.with_timezone(&chrono_tz::Australia::Lord_Howe)
                .naive_local(),
            at(2026, 10, 4, 2, 30)
        );
    }

    #[test]
    fn tzdata_version_is_recorded() {
        assert_eq!(TZDATA_VERSION.len(), 5, "{TZDATA_VERSION}");
    }

    #[test]
    fn canonical_zone_count_is_plausible() {
        let n = canonical_zones().len();
        assert!((350..=500).contains(&n), "{n} zones");
    }
}
