//! The planner: a campaign's schedule, the zones present in its audience and
//! "now" in; the per-zone send slots out. Pure: no I/O, no clock of its own.
//!
//! **Invariant:** every slot's local wall time is the requested one, or the first
//! instant after a DST gap, or the end of the quiet-hours window; a wall time that
//! occurs twice fires once, at its first occurrence; no zone gets two slots for
//! one occurrence.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::domain::campaign::{Missed, PlanSchedule, QuietWindow};
use crate::domain::zone::{parse_zone, resolve_local, LocalFit, TZDATA_VERSION};

mod cron;

use cron::next_cron_local;
pub use cron::{next_wall_time, CRON_HORIZON_DAYS};

/// The zone key of a slot that serves every recipient at one instant.
pub const ALL_ZONES: &str = "*";

/// How far an `at` instant may lie in the past and still be sent at once.
pub const AT_GRACE: TimeDelta = TimeDelta::hours(1);

/// Recipients sharing one effective zone, as stored (`""` when they have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCount {
    pub zone: String,
    pub recipients: u64,
}

#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    pub schedule: &'a PlanSchedule,
    pub quiet_hours: Option<QuietWindow>,
    pub zones: &'a [ZoneCount],
    /// Used for recipients with no zone or one the compiled tzdata does not know.
    pub default_zone: Tz,
    pub now: DateTime<Utc>,
}

/// Why a slot fires when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disposition {
    /// At the requested wall time (for a repeated wall time, its first occurrence).
    OnTime,
    /// The requested wall time falls in a DST gap: the first instant after it.
    GapShifted,
    /// The requested moment fell in quiet hours: the window's end.
    QuietHours,
    /// The moment had passed (within the grace period, or `missed = "send_now"`): now.
    LateSendNow,
    /// The moment had passed (`missed = "next_day"`): the same wall time a day later.
    NextDay,
    /// The moment had passed beyond the grace period (`missed = "skip"`): not sent.
    Skipped,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTime => "on_time",
            Self::GapShifted => "gap_shifted",
            Self::QuietHours => "quiet_hours",
            Self::LateSendNow => "late_send_now",
            Self::NextDay => "next_day",
            Self::Skipped => "skipped",
        }
    }

    pub const ALL: [Self; 6] = [
        Self::OnTime,
        Self::GapShifted,
        Self::QuietHours,
        Self::LateSendNow,
        Self::NextDay,
        Self::Skipped,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSlot {
    /// The zone key the slot serves, as stored on recipients, or [`ALL_ZONES`].
    pub zone: String,
    /// The zone used for local-time arithmetic (the default zone for unknown keys).
    pub tz: Tz,
    /// Identifies the campaign occurrence the slot belongs to (the requested local
    /// wall time, or the instant); recipients are de-duplicated on it.
    pub occurrence: String,
    pub fire_at: DateTime<Utc>,
    pub disposition: Disposition,
    pub recipients: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tzdata_version: &'static str,
    pub slots: Vec<PlannedSlot>,
    /// Recipients whose zone was missing or unknown and who got the default zone.
    pub defaulted_recipients: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("schedule.at: {at} is more than an hour in the past")]
    AtInThePast { at: DateTime<Utc> },
    /// An `at` or `local` time further from now than [`SCHEDULE_REACH`]: a
    /// typo such as year 0001 or 9999, never a plan.
    #[error("schedule.at: {at} is more than {years} years from now", years = SCHEDULE_REACH.num_days() / 366)]
    OutOfReach { at: String },
    #[error(
        "schedule.at: {at} has already passed in every zone of the audience (missed = \"skip\")"
    )]
    PassedEverywhere { at: NaiveDateTime },
    /// A cron schedule that never fires in any zone: before `until`, or (without
    /// one) within [`CRON_HORIZON_DAYS`]. The engine takes it as the end of a
    /// recurring campaign; a definition that has it is refused.
    #[error("schedule.cron: {cron:?} has no occurrence {within}")]
    NoOccurrence { cron: String, within: String },
}

/// How far from now an `at` or `local` schedule may lie, either way.
pub const SCHEDULE_REACH: TimeDelta = TimeDelta::days(8 * 366 + 2);

impl Plan {
    /// First and last send instants of the slots that will fire.
    pub fn span(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let mut firing = self.firing().map(|s| s.fire_at);
        let first = firing.next()?;
        Some(firing.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t))))
    }

    /// Slots that will fire (not skipped).
    pub fn firing(&self) -> impl Iterator<Item = &PlannedSlot> {
        self.slots
            .iter()
            .filter(|s| s.disposition != Disposition::Skipped)
    }

    /// Slots grouped by the instant they fire: on one day ~400 zones share ~39 instants.
    pub fn by_instant(&self) -> BTreeMap<DateTime<Utc>, Vec<&PlannedSlot>> {
        let mut groups: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for s in self.firing() {
            groups.entry(s.fire_at).or_default().push(s);
        }
        groups
    }

    /// Recipients per disposition.
    pub fn recipients_by_disposition(&self) -> BTreeMap<Disposition, u64> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            *out.entry(s.disposition).or_default() += s.recipients;
        }
        out
    }
}

const OCCURRENCE_FORMAT: &str = "%Y-%m-%dT%H:%M";

fn occurrence_of_local(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp() % 60 == 0 {
        t.format(OCCURRENCE_FORMAT).to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

fn occurrence_of_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Plans the next occurrence of a campaign.
pub fn plan(req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
    let mut defaulted = 0;
    let zones: Vec<(&ZoneCount, Tz)> = req
        .zones
        .iter()
        .map(|z| {
            let tz = parse_zone(&z.zone).unwrap_or_else(|| {
                defaulted += z.recipients;
                req.default_zone
            });
            (z, tz)
        })
        .collect();
    let total: u64 = req.zones.iter().map(|z| z.recipients).sum();

    let within_reach = |t: NaiveDateTime| (t - req.now.naive_utc()).abs() <= SCHEDULE_REACH;
    match req.schedule {
        PlanSchedule::At(at) if !within_reach(at.naive_utc()) => {
            return Err(PlanError::OutOfReach {
                at: occurrence_of_instant(*at),
            })
        }
        PlanSchedule::Local { at, .. } if !within_reach(*at) => {
            return Err(PlanError::OutOfReach {
                at: occurrence_of_local(*at),
            })
        }
        _ => {}
    }
    if let PlanSchedule::Cron { cron, until, .. } = req.schedule {
        // Wall times are the same in every zone: one search from a day before
        // `now` refuses an expression that never fires before every zone would
        // search the whole horizon for it.
        let from = req.now.naive_utc() - TimeDelta::days(1);
        if next_wall_time(
            cron,
            from,
            from.date() + chrono::Days::new(CRON_HORIZON_DAYS + 2),
        )
        .is_none()
        {
            return Err(no_occurrence(cron, *until));
        }
    }
    // The instant every recipient shares, for schedules that do not depend on the zone.
    let shared = match req.schedule {
        PlanSchedule::Now => Some((req.now, occurrence_of_instant(req.now), Disposition::OnTime)),
        PlanSchedule::At(at) => {
            if *at + AT_GRACE < req.now {
                return Err(PlanError::AtInThePast { at: *at });
            }
            let (fire, disp) = if *at < req.now {
                (req.now, Disposition::LateSendNow)
            } else {
                (*at, Disposition::OnTime)
            };
            Some((fire, occurrence_of_instant(*at), disp))
        }
        PlanSchedule::Cron {
            cron,
            zone: Some(tz),
            until,
        } => match next_cron_local(cron, *tz, req.now) {
            Some((local, fire, fit)) if until.is_none_or(|u| fire < u) => {
                Some((fire, occurrence_of_local(local), disposition_of(fit)))
            }
            _ => return Err(no_occurrence(cron, *until)),
        },
        PlanSchedule::Local { .. } | PlanSchedule::Cron { zone: None, .. } => None,
    };

    let mut slots = Vec::with_capacity(zones.len());
    if let Some((fire_at, occurrence, disposition)) = shared {
        match req.quiet_hours {
            None => {
                slots.push(PlannedSlot {
                    zone: ALL_ZONES.to_owned(),
                    tz: req.default_zone,
                    occurrence,
                    fire_at,
                    disposition,
                    recipients: total,
                });
                return Ok(Plan {
                    tzdata_version: TZDATA_VERSION,
                    slots,
                    defaulted_recipients: defaulted,
                });
            }
            Some(window) => {
                for (z, tz) in &zones {
                    let (fire_at, disposition) =
                        apply_quiet_hours(window, *tz, fire_at, disposition);
                    slots.push(PlannedSlot {
                        zone: z.zone.clone(),
                        tz: *tz,
                        occurrence: occurrence.clone(),
                        fire_at,
                        disposition,
                        recipients: z.recipients,
                    });
                }
            }
        }
    } else {
        for (z, tz) in &zones {
            let slot = match req.schedule {
                PlanSchedule::Local { at, missed, grace } => {
                    let (fire_at, disposition) = local_fire(*tz, *at, *missed, *grace, req.now);
                    Some((occurrence_of_local(*at), fire_at, disposition))
                }
                PlanSchedule::Cron { cron, until, .. } => next_cron_local(cron, *tz, req.now)
                    .filter(|(_, fire, _)| until.is_none_or(|u| *fire < u))
                    .map(|(local, fire, fit)| {
                        (occurrence_of_local(local), fire, disposition_of(fit))
                    }),
                PlanSchedule::Now | PlanSchedule::At(_) => None,
            };
            let Some((occurrence, fire_at, disposition)) = slot else {
                continue;
            };
            let (fire_at, disposition) = match req.quiet_hours {
                Some(w) if disposition != Disposition::Skipped => {
                    apply_quiet_hours(w, *tz, fire_at, disposition)
                }
                _ => (fire_at, disposition),
            };
            slots.push(PlannedSlot {
                zone: z.zone.clone(),
                tz: *tz,
                occurrence,
                fire_at,
                disposition,
                recipients: z.recipients,
            });
        }
        if let PlanSchedule::Cron { cron, until, .. } = req.schedule {
            if slots.is_empty() && !zones.is_empty() {
                return Err(no_occurrence(cron, *until));
            }
        }
        if let PlanSchedule::Local { at, .. } = req.schedule {
            // Zones planned ahead for recipients who may register later do not count.
            let mut populated = slots.iter().filter(|s| s.recipients > 0).peekable();
            if populated.peek().is_some()
                && populated.all(|s| s.disposition == Disposition::Skipped)
            {
                return Err(PlanError::PassedEverywhere { at: *at });
            }
        }
    }
    slots.sort_by(|a, b| a.fire_at.cmp(&b.fire_at).then_with(|| a.zone.cmp(&b.zone)));
    Ok(Plan {
        tzdata_version: TZDATA_VERSION,
        slots,
        defaulted_recipients: defaulted,
    })
}

fn disposition_of(fit: LocalFit) -> Disposition {
    match fit {
        LocalFit::Gap => Disposition::GapShifted,
        LocalFit::Exact | LocalFit::Overlap => Disposition::OnTime,
    }
}

/// When a `local` schedule fires in one zone, given what to do if it has passed.
fn local_fire(
    tz: Tz,
    at: NaiveDateTime,
    missed: Missed,
    grace: Duration,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, Disposition) {
    let (fire, fit) = resolve_local(tz, at);
    if fire >= now {
        return (fire, disposition_of(fit));
    }
    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    match missed {
        Missed::SendNow => (now, Disposition::LateSendNow),
        Missed::Skip if now - fire <= grace => (now, Disposition::LateSendNow),
        Missed::Skip => (fire, Disposition::Skipped),
        Missed::NextDay => {
            // The first later day on which the wall time is still ahead.
            let days_late = (now - fire).num_days() + 1;
            let mut local = at + TimeDelta::days(days_late);
            loop {
                let (t, _) = resolve_local(tz, local);
                if t >= now {
                    return (t, Disposition::NextDay);
                }
                local += TimeDelta::days(1);
            }
        }
    }
}

fn no_occurrence(cron: &croner::Cron, until: Option<DateTime<Utc>>) -> PlanError {
    PlanError::NoOccurrence {
        cron: cron.pattern.as_str().to_owned(),
        within: match until {
            Some(u) => format!("before until = {}", occurrence_of_instant(u)),
            None => format!("in the next {} years", CRON_HORIZON_DAYS / 366),
        },
    }
}

/// Moves an instant that falls in the zone's quiet hours to the window's end.
fn apply_quiet_hours(
    window: QuietWindow,
    tz: Tz,
    fire_at: DateTime<Utc>,
    disposition: Disposition,
) -> (DateTime<Utc>, Disposition) {
    let local = fire_at.with_timezone(&tz).naive_local();
    if !window.contains(local.time()) {
        return (fire_at, disposition);
    }
    let mut end = local.date().and_time(window.end);
    if end <= local {
        end += TimeDelta::days(1);
    }
    (resolve_local(tz, end).0, Disposition::QuietHours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, NaiveTime, TimeZone};
    use proptest::prelude::*;

    fn local(s: &str) -> NaiveDateTime {
        crate::domain::campaign::parse_local_datetime(s).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn zones(names: &[&str]) -> Vec<ZoneCount> {
        names
            .iter()
            .map(|z| ZoneCount {
                zone: (*z).to_owned(),
                recipients: 10,
            })
            .collect()
    }

    fn local_schedule(at: &str, missed: Missed) -> PlanSchedule {
        PlanSchedule::Local {
            at: local(at),
            missed,
            grace: Duration::from_secs(3600),
        }
    }

    fn run(schedule: &PlanSchedule, zs: &[ZoneCount], now: DateTime<Utc>) -> Plan {
        plan(&PlanRequest {
            schedule,
            quiet_hours: None,
            zones: zs,
            default_zone: chrono_tz::UTC,
            now,
        })
        .expect("plans")
    }

    fn slot<'p>(p: &'p Plan, zone: &str) -> &'p PlannedSlot {
        p.slots
            .iter()
            .find(|s| s.zone == zone)
            .expect("slot for zone")
    }

    #[test]
    fn local_schedule_fires_at_each_zones_own_wall_time() {
        let s = local_schedule("2026-12-01T09:00", Missed::Skip);
        let zs = zones(&[
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "America/St_Johns",
            "Europe/Berlin",
        ]);
        let p = run(&s, &zs, utc(2026, 11, 1, 0, 0));
        assert_eq!(slot(&p, "Asia/Kolkata").fire_at, utc(2026, 12, 1, 3, 30));
        assert_eq!(slot(&p, "Asia/Kathmandu").fire_at, utc(2026, 12, 1, 3, 15));
        // Lord Howe is on +11:00 in summer.
        assert_eq!(
            slot(&p, "Australia/Lord_Howe").fire_at,
            utc(2026, 11, 30, 22, 0)
        );
        // Chatham is on +13:45 in summer.
        assert_eq!(
            slot(&p, "Pacific/Chatham").fire_at,
            utc(2026, 11, 30, 19, 15)
        );
        assert_eq!(
            slot(&p, "America/St_Johns").fire_at,
            utc(2026, 12, 1, 12, 30)
        );
        assert_eq!(slot(&p, "Europe/Berlin").fire_at, utc(2026, 12, 1, 8, 0));
        assert!(p.slots.iter().all(|s| s.occurrence == "2026-12-01T09:00"));
        assert!(p.slots.windows(2).all(|w| w[0].fire_at <= w[1].fire_at));
    }

    #[test]
    fn date_line_zones_span_25_hours() {
        let s = local_schedule("2026-12-01T09:00", Missed::Skip);
        let zs = zones(&["Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/London"]);
        let p = run(&s, &zs, utc(2026, 11, 1, 0, 0));
        assert_eq!(
            slot(&p, "Pacific/Kiritimati").fire_at,
            utc(2026, 11, 30, 19, 0)
        );
        assert_eq!(
            slot(&p, "Pacific/Pago_Pago").fire_at,
            utc(2026, 12, 1, 20, 0)
        );
        let (first, last) = p.span().unwrap();
        assert_eq!(last - first, TimeDelta::hours(25));
    }

    #[test]
    fn spring_gap_and_autumn_overlap() {
        let zs = zones(&["America/New_York"]);
        let gap = run(
            &local_schedule("2026-03-08T02:30", Missed::Skip),
            &zs,
            utc(2026, 3, 1, 0, 0),
        );
        assert_eq!(gap.slots[0].fire_at, utc(2026, 3, 8, 7, 0));
        assert_eq!(gap.slots[0].disposition, Disposition::GapShifted);
        let overlap = run(
            &local_schedule("2026-11-01T01:30", Missed::Skip),
            &zs,
            utc(2026, 10, 1, 0, 0),
        );
        assert_eq!(overlap.slots.len(), 1);
        assert_eq!(overlap.slots[0].fire_at, utc(2026, 11, 1, 5, 30));
        assert_eq!(overlap.slots[0].disposition, Disposition::OnTime);
    }

    #[test]
    fn missed_zones_skip_within_grace_send_now_or_next_day() {
        // 09:00 in Berlin is 08:00Z; at 08:30Z it is 30 minutes late, within grace.
        // Tokyo's 09:00 (00:00Z) is 8.5 hours late. New York's is ahead.
        let zs = zones(&["Europe/Berlin", "Asia/Tokyo", "America/New_York"]);
        let now = utc(2026, 12, 1, 8, 30);
        let p = run(&local_schedule("2026-12-01T09:00", Missed::Skip), &zs, now);
        assert_eq!(
            slot(&p, "Europe/Berlin").disposition,
            Disposition::LateSendNow
        );
        assert_eq!(slot(&p, "Europe/Berlin").fire_at, now);
        assert_eq!(slot(&p, "Asia/Tokyo").disposition, Disposition::Skipped);
        assert_eq!(
            slot(&p, "America/New_York").disposition,
            Disposition::OnTime
        );
        assert_eq!(p.recipients_by_disposition()[&Disposition::Skipped], 10);

        let p = run(
            &local_schedule("2026-12-01T09:00", Missed::NextDay),
            &zs,
            now,
        );
        assert_eq!(slot(&p, "Asia/Tokyo").fire_at, utc(2026, 12, 2, 0, 0));
        assert_eq!(slot(&p, "Asia/Tokyo").disposition, Disposition::NextDay);

        let p = run(
            &local_schedule("2026-12-01T09:00", Missed::SendNow),
            &zs,
            now,
        );
        assert_eq!(slot(&p, "Asia/Tokyo").fire_at, now);
    }

    #[test]
    fn passed_everywhere_is_refused() {
        let zs = zones(&["Europe/Berlin"]);
        let err = plan(&PlanRequest {
            schedule: &local_schedule("2026-12-01T09:00", Missed::Skip),
            quiet_hours: None,
            zones: &zs,
            default_zone: chrono_tz::UTC,
            now: utc(2026, 12, 2, 0, 0),
        })
        .unwrap_err();
        assert!(matches!(err, PlanError::PassedEverywhere { .. }));
    }

    #[test]
    fn quiet_hours_push_to_window_end() {
        // "now" at 22:30 in Berlin; quiet 22:00-08:00 → 08:00 next morning local.
        let zs = zones(&["Europe/Berlin", "America/New_York"]);
        let now = utc(2026, 12, 1, 21, 30);
        let p = plan(&PlanRequest {
            schedule: &PlanSchedule::Now,
            quiet_hours: Some(QuietWindow {
                start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            }),
            zones: &zs,
            default_zone: chrono_tz::UTC,
            now,
        })
        .unwrap();
        let berlin = slot(&p, "Europe/Berlin");
        assert_eq!(berlin.fire_at, utc(2026, 12, 2, 7, 0));
        assert_eq!(berlin.disposition, Disposition::QuietHours);
        // 16:30 in New York: not quiet.
        assert_eq!(slot(&p, "America/New_York").fire_at, now);
    }

    #[test]
    fn now_without_quiet_hours_is_one_slot_for_everyone() {
        let zs = zones(&["Europe/Berlin", "Asia/Tokyo"]);
        let now = utc(2026, 12, 1, 12, 0);
        let p = run(&PlanSchedule::Now, &zs, now);
        assert_eq!(p.slots.len(), 1);
        assert_eq!(p.slots[0].zone, ALL_ZONES);
        assert_eq!(p.slots[0].recipients, 20);
    }

    #[test]
    fn at_in_the_past_is_refused_beyond_an_hour() {
        let zs = zones(&["UTC"]);
        let now = utc(2026, 12, 1, 12, 0);
        let p = run(&PlanSchedule::At(utc(2026, 12, 1, 11, 30)), &zs, now);
        assert_eq!(p.slots[0].fire_at, now);
        let err = plan(&PlanRequest {
            schedule: &PlanSchedule::At(utc(2026, 12, 1, 10, 0)),
            quiet_hours: None,
            zones: &zs,
            default_zone: chrono_tz::UTC,
            now,
        });
        assert!(matches!(err, Err(PlanError::AtInThePast { .. })));
    }

    #[test]
    fn unknown_and_missing_zones_use_the_default() {
        let zs = zones(&["", "Mars/Olympus", "Asia/Tokyo"]);
        let p = plan(&PlanRequest {
            schedule: &local_schedule("2026-12-01T09:00", Missed::Skip),
            quiet_hours: None,
            zones: &zs,
            default_zone: chrono_tz::Europe::Berlin,
            now: utc(2026, 11, 1, 0, 0),
        })
        .unwrap();
        assert_eq!(p.defaulted_recipients, 20);
        assert_eq!(slot(&p, "Mars/Olympus").fire_at, utc(2026, 12, 1, 8, 0));
        assert_eq!(slot(&p, "").tz, chrono_tz::Europe::Berlin);
        assert_eq!(p.tzdata_version, TZDATA_VERSION);
    }

    #[test]
    fn cron_per_zone_next_occurrence_and_dst() {
        let cron = croner::parser::CronParser::builder()
            .build()
            .parse("30 2 * * *")
            .unwrap();
        let s = PlanSchedule::Cron {
            cron: Box::new(cron),
            zone: None,
            until: None,
        };
        let zs = zones(&["America/New_York"]);
        // Just before the spring-forward day's 02:30, which does not exist.
        let p = run(&s, &zs, utc(2026, 3, 8, 6, 0));
        assert_eq!(p.slots[0].occurrence, "2026-03-08T02:30");
        assert_eq!(p.slots[0].fire_at, utc(2026, 3, 8, 7, 0));
        // Autumn: 01:30 happens twice; after the first pass, the next is the following day.
        let cron = croner::parser::CronParser::builder()
            .build()
            .parse("30 1 * * *")
            .unwrap();
        let s = PlanSchedule::Cron {
            cron: Box::new(cron),
            zone: None,
            until: None,
        };
        let p = run(&s, &zs, utc(2026, 11, 1, 5, 45));
        assert_eq!(p.slots[0].occurrence, "2026-11-02T01:30");
    }

    #[test]
    fn cron_in_named_zone_and_until() {
        let cron = croner::parser::CronParser::builder()
            .build()
            .parse("0 9 * * MON")
            .unwrap();
        let s = PlanSchedule::Cron {
            cron: Box::new(cron.clone()),
            zone: Some(chrono_tz::Asia::Kathmandu),
            until: None,
        };
        let zs = zones(&["Europe/Berlin", "Asia/Tokyo"]);
        let p = run(&s, &zs, utc(2026, 11, 23, 12, 0));
        assert_eq!(p.slots.len(), 1);
        assert_eq!(p.slots[0].fire_at, utc(2026, 11, 30, 3, 15));
        let s = PlanSchedule::Cron {
            cron: Box::new(cron),
            zone: Some(chrono_tz::Asia::Kathmandu),
            until: Some(utc(2026, 11, 30, 0, 0)),
        };
        let refused = plan(&PlanRequest {
            schedule: &s,
            quiet_hours: None,
            zones: &zs,
            default_zone: chrono_tz::UTC,
            now: utc(2026, 11, 23, 12, 0),
        });
        assert!(
            matches!(&refused, Err(e @ PlanError::NoOccurrence { .. })
                if e.to_string().starts_with("schedule.cron: ")
                    && e.to_string().ends_with(" has no occurrence before until = 2026-11-30T00:00:00Z")),
            "{refused:?}"
        );
    }

    #[test]
    fn times_years_away_are_refused_naming_the_field() {
        let now = utc(2026, 11, 23, 12, 0);
        let zs = zones(&["Europe/Berlin"]);
        for at in ["0001-01-01T09:00", "9999-12-01T09:00", "2040-01-01T09:00"] {
            for s in [
                local_schedule(at, Missed::SendNow),
                PlanSchedule::At(local(at).and_utc()),
            ] {
                let refused = plan(&PlanRequest {
                    schedule: &s,
                    quiet_hours: None,
                    zones: &zs,
                    default_zone: chrono_tz::UTC,
                    now,
                });
                assert!(
                    matches!(&refused, Err(e @ PlanError::OutOfReach { .. })
                        if e.to_string().starts_with("schedule.at: ")),
                    "{at}: {refused:?}"
                );
            }
        }
        // Eight years ahead is still a plan.
        assert_eq!(
            run(&local_schedule("2034-11-01T09:00", Missed::Skip), &zs, now)
                .slots
                .len(),
            1
        );
    }

    #[test]
    fn many_zones_share_few_instants() {
        let zs: Vec<ZoneCount> = crate::domain::zone::canonical_zones()
            .iter()
            .map(|tz| ZoneCount {
                zone: tz.name().to_owned(),
                recipients: 1,
            })
            .collect();
        let p = run(
            &local_schedule("2026-12-01T09:00", Missed::Skip),
            &zs,
            utc(2026, 11, 1, 0, 0),
        );
        assert_eq!(p.slots.len(), zs.len());
        let groups = p.by_instant().len();
        assert!((30..=45).contains(&groups), "{groups} distinct instants");
    }

    fn any_zone() -> impl Strategy<Value = Tz> {
        (0..chrono_tz::TZ_VARIANTS.len()).prop_map(|i| chrono_tz::TZ_VARIANTS[i])
    }

    fn any_local() -> impl Strategy<Value = NaiveDateTime> {
        (2015i32..2038, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60).prop_map(|(y, m, d, h, mi)| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(h, mi, 0)
                .unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn slot_wall_time_is_requested_or_first_after_gap(tz in any_zone(), at in any_local()) {
            let zs = vec![ZoneCount { zone: tz.name().to_owned(), recipients: 1 }];
            let s = PlanSchedule::Local { at, missed: Missed::Skip, grace: Duration::ZERO };
            let p = plan(&PlanRequest {
                schedule: &s, quiet_hours: None, zones: &zs,
                default_zone: chrono_tz::UTC, now: at.and_utc() - TimeDelta::days(2),
            }).unwrap();
            prop_assert_eq!(p.slots.len(), 1);
            let slot = &p.slots[0];
            let wall = slot.fire_at.with_timezone(&tz).naive_local();
            let before = (slot.fire_at - TimeDelta::seconds(1)).with_timezone(&tz).naive_local();
            match slot.disposition {
                Disposition::OnTime => {
                    prop_assert_eq!(wall, at);
                    // The first occurrence: no earlier instant within 3 hours shows the same wall time.
                    for back in 1..=180 {
                        let earlier = slot.fire_at - TimeDelta::minutes(back);
                        prop_assert_ne!(earlier.with_timezone(&tz).naive_local(), at);
                    }
                }
                Disposition::GapShifted => {
                    prop_assert!(wall > at, "{} > {}", wall, at);
                    prop_assert!(before < at, "{} < {}", before, at);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn one_slot_per_zone_per_occurrence(
            tzs in proptest::collection::vec(any_zone(), 1..40),
            at in any_local(),
            quiet in proptest::option::of((0u32..24, 0u32..24)),
        ) {
            let distinct: std::collections::BTreeSet<&str> = tzs.iter().map(|tz| tz.name()).collect();
            let zs: Vec<ZoneCount> = distinct.iter().map(|z| ZoneCount { zone: (*z).to_owned(), recipients: 1 }).collect();
            let quiet_hours = quiet.filter(|(a, b)| a != b).map(|(a, b)| QuietWindow {
                start: NaiveTime::from_hms_opt(a, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(b, 0, 0).unwrap(),
            });
            let s = PlanSchedule::Local { at, missed: Missed::NextDay, grace: Duration::ZERO };
            let now = at.and_utc();
            let p = plan(&PlanRequest { schedule: &s, quiet_hours, zones: &zs, default_zone: chrono_tz::UTC, now }).unwrap();
            let mut seen = std::collections::HashSet::new();
            for slot in &p.slots {
                prop_assert!(seen.insert((slot.zone.clone(), slot.occurrence.clone())), "two slots for {}", slot.zone);
                prop_assert!(slot.fire_at >= now);
                if let Some(w) = quiet_hours {
                    let wall = slot.fire_at.with_timezone(&slot.tz).naive_local().time();
                    // A window end inside a DST gap lands just after it, still outside the window.
                    prop_assert!(!w.contains(wall) || slot.disposition == Disposition::QuietHours);
                }
            }
            prop_assert_eq!(p.slots.len(), zs.len());
        }
    }
}
