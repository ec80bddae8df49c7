//! The next occurrence of a cron expression, on wall time, with bounded work
//! for any expression: croner's own search runs to the year 5000 (seconds of
//! CPU for `0 9 30 2 *`); this one looks at most [`CRON_HORIZON_DAYS`] ahead.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;

use crate::domain::zone::{resolve_local, LocalFit};

/// How far ahead a cron schedule's next occurrence is looked for: a little over
/// eight years, so that 29 February is found across a century year that is not a
/// leap year (2096, then 2104). croner's own search runs on to the year 5000: for
/// `0 9 30 2 *` that was seconds of CPU per zone on the API's runtime.
pub const CRON_HORIZON_DAYS: u64 = 8 * 366 + 2;

/// The next wall-clock occurrence of `cron` in `tz` strictly after `now`, and its instant.
///
/// Evaluated on wall time, so a wall time repeated by an autumn overlap is one
/// occurrence, and one inside a spring gap still fires (just after the gap).
pub(super) fn next_cron_local(
    cron: &croner::Cron,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<(NaiveDateTime, DateTime<Utc>, LocalFit)> {
    let mut after = now.with_timezone(&tz).naive_local();
    let last = after.date() + chrono::Days::new(CRON_HORIZON_DAYS);
    // An occurrence whose wall time is ahead but whose instant is not (in an overlap's
    // second pass the wall clock repeats) was already served: step past it.
    for _ in 0..4 {
        let local = next_wall_time(cron, after, last)?;
        let (fire, fit) = resolve_local(tz, local);
        if fire > now {
            return Some((local, fire, fit));
        }
        after = local;
    }
    None
}

/// The first wall time of `cron` strictly after `after`, on or before the day
/// `last`. Bounded work: one match of the date fields per day up to the answer
/// (at most the horizon), then at most one hour's minutes and seconds.
pub fn next_wall_time(
    cron: &croner::Cron,
    after: NaiveDateTime,
    last: NaiveDate,
) -> Option<NaiveDateTime> {
    let p = &cron.pattern;
    let (hours, minutes, seconds) = (p.hours.values(), p.minutes.values(), p.seconds.values());
    let at = |h: u16, m: u16, s: u16| NaiveTime::from_hms_opt(h.into(), m.into(), s.into());
    // The time fields are plain sets (no L, W or #), so a day has an occurrence
    // exactly when the date fields match with the day's first time of day.
    let first = at(*hours.first()?, *minutes.first()?, *seconds.first()?)?;
    let mut day = after.date();
    while day <= last {
        let matches = cron.is_time_matching(&day.and_time(first)).unwrap_or(false);
        if matches && day > after.date() {
            return Some(day.and_time(first));
        }
        if matches {
            for &h in hours.iter().filter(|&&h| u32::from(h) >= after.hour()) {
                for &m in &minutes {
                    for &s in &seconds {
                        let t = day.and_time(at(h, m, s)?);
                        if t > after {
                            return Some(t);
                        }
                    }
                }
            }
        }
        day = day.succ_opt()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::campaign::PlanSchedule;
    use crate::domain::planner::{plan, PlanRequest, ZoneCount};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn cron(expr: &str) -> croner::Cron {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expr)
            .unwrap()
    }

    #[test]
    fn a_cron_that_never_fires_is_refused_in_every_zone_and_in_one() {
        let zs: Vec<ZoneCount> = crate::domain::zone::canonical_zones()
            .iter()
            .map(|tz| ZoneCount {
                zone: tz.name().to_owned(),
                recipients: 1,
            })
            .collect();
        for expr in ["0 9 30 2 *", "0 9 31 4 *", "0 0 31 2,4,6,9,11 *"] {
            for zone in [None, Some(chrono_tz::UTC)] {
                let s = PlanSchedule::Cron {
                    cron: Box::new(cron(expr)),
                    zone,
                    until: None,
                };
                let refused = plan(&PlanRequest {
                    schedule: &s,
                    quiet_hours: None,
                    zones: &zs,
                    default_zone: chrono_tz::UTC,
                    now: utc(2026, 11, 23, 12, 0),
                });
                assert!(
                    matches!(&refused, Err(e) if e.to_string().starts_with("schedule.cron: ")
                        && e.to_string().ends_with("has no occurrence in the next 8 years")),
                    "{expr}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn a_leap_day_is_found_across_a_century_that_has_none() {
        let c = cron("0 9 29 2 *");
        let after = NaiveDate::from_ymd_opt(2096, 3, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let next = next_wall_time(
            &c,
            after,
            after.date() + chrono::Days::new(CRON_HORIZON_DAYS),
        );
        assert_eq!(
            next,
            NaiveDate::from_ymd_opt(2104, 2, 29)
                .unwrap()
                .and_hms_opt(9, 0, 0)
        );
    }

    /// One cron field: a number in `values`, or one of `forms`.
    fn cron_field(
        values: std::ops::Range<u8>,
        forms: &'static [&'static str],
    ) -> impl Strategy<Value = String> {
        prop_oneof![
            values.prop_map(|v| v.to_string()),
            proptest::sample::select(forms).prop_map(str::to_owned),
        ]
    }

    /// Cron expressions from the fields' usual forms, day-of-month and
    /// day-of-week modifiers included.
    fn cron_expr() -> impl Strategy<Value = String> {
        (
            cron_field(0..60, &["*", "*/15", "5,35"]),
            cron_field(0..24, &["*", "9-17", "*/6"]),
            cron_field(1..32, &["*", "L", "15W", "1,15"]),
            cron_field(1..13, &["*", "2", "*/3"]),
            cron_field(0..7, &["*", "MON-FRI", "5L", "1#2"]),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The bounded search finds what croner's own finds, whenever that lies
        /// inside the horizon, and nothing otherwise.
        #[test]
        fn the_bounded_search_agrees_with_croner(expr in cron_expr(), day in 0u64..3000, secs in 0u32..86_400) {
            let c = cron(&expr);
            let after = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(day);
            let after = after.and_time(NaiveTime::from_num_seconds_from_midnight_opt(secs, 0).unwrap());
            let last = after.date() + chrono::Days::new(CRON_HORIZON_DAYS);
            let ours = next_wall_time(&c, after, last);
            let theirs = c.find_next_occurrence(&after, false).ok().filter(|t| t.date() <= last);
            prop_assert_eq!(ours, theirs, "{}", expr);
        }

        /// Planning any cron expression in every zone is bounded work: a few
        /// horizon's worth of day matches at most, never croner's search to the
        /// year 5000 (5 s of CPU per request for `0 9 30 2 *` before). The budget
        /// is generous for a debug build on a busy machine.
        #[test]
        fn planning_any_cron_in_every_zone_stays_within_a_time_budget(expr in cron_expr()) {
            let zs: Vec<ZoneCount> = crate::domain::zone::canonical_zones()
                .iter()
                .map(|tz| ZoneCount { zone: tz.name().to_owned(), recipients: 1 })
                .collect();
            let s = PlanSchedule::Cron { cron: Box::new(cron(&expr)), zone: None, until: None };
            let started = std::time::Instant::now();
            let _ = plan(&PlanRequest {
                schedule: &s,
                quiet_hours: None,
                zones: &zs,
                default_zone: chrono_tz::UTC,
                now: utc(2026, 11, 23, 12, 0),
            });
            prop_assert!(started.elapsed() < std::time::Duration::from_secs(2), "{}: {:?}", expr, started.elapsed());
        }
    }
}
