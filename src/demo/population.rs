//! The demo's users and the wall time its campaign goes out at (pure, seeded).

use crate::domain::campaign::Platform;
use crate::domain::zone::resolve_local;
use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use std::time::Duration;

/// Fixed, so every run seeds the same population and prints comparable numbers.
pub(super) const SEED: u64 = 2026;

/// The simulator answers tokens starting with this as unregistered.
pub(super) const DEAD_PREFIX: &str = "dead";

/// The seeded users' zones (users are spread over them evenly) and the locale
/// their devices report. Central Europe is the largest group of one offset, so
/// it is where the campaign comes due first; the list covers every offset from
/// −10:00 to +13:45, including the 30- and 45-minute ones.
pub(super) const ZONES: &[(&str, &str)] = &[
    ("Europe/Berlin", "de-DE"),
    ("Europe/Paris", "fr-FR"),
    ("Europe/Madrid", "es-ES"),
    ("Europe/Rome", "it-IT"),
    ("Europe/Amsterdam", "nl-NL"),
    ("Europe/Warsaw", "pl-PL"),
    ("Europe/Stockholm", "sv-SE"),
    ("Europe/Vienna", "de-AT"),
    ("Africa/Lagos", "en-NG"),
    ("Europe/London", "en-GB"),
    ("Europe/Lisbon", "pt-PT"),
    ("Europe/Athens", "el-GR"),
    ("Europe/Helsinki", "fi-FI"),
    ("Africa/Johannesburg", "en-ZA"),
    ("Africa/Cairo", "ar-EG"),
    ("Europe/Istanbul", "tr-TR"),
    ("Asia/Riyadh", "ar-SA"),
    ("Asia/Tehran", "fa-IR"),
    ("Asia/Dubai", "ar-AE"),
    ("Asia/Kabul", "fa-AF"),
    ("Asia/Karachi", "ur-PK"),
    ("Asia/Kolkata", "hi-IN"),
    ("Asia/Kathmandu", "ne-NP"),
    ("Asia/Dhaka", "bn-BD"),
    ("Asia/Yangon", "my-MM"),
    ("Asia/Bangkok", "th-TH"),
    ("Asia/Jakarta", "id-ID"),
    ("Asia/Shanghai", "zh-CN"),
    ("Asia/Singapore", "en-SG"),
    ("Asia/Tokyo", "ja-JP"),
    ("Asia/Seoul", "ko-KR"),
    ("Australia/Adelaide", "en-AU"),
    ("Australia/Sydney", "en-AU"),
    ("Pacific/Auckland", "en-NZ"),
    ("Pacific/Chatham", "en-NZ"),
    ("America/Sao_Paulo", "pt-BR"),
    ("America/Argentina/Buenos_Aires", "es-AR"),
    ("America/St_Johns", "en-CA"),
    ("America/New_York", "en-US"),
    ("America/Toronto", "en-CA"),
    ("America/Bogota", "es-CO"),
    ("America/Chicago", "en-US"),
    ("America/Mexico_City", "es-MX"),
    ("America/Denver", "en-US"),
    ("America/Phoenix", "en-US"),
    ("America/Los_Angeles", "en-US"),
    ("America/Anchorage", "en-US"),
    ("Pacific/Honolulu", "en-US"),
];

/// When the demo campaign comes due. `at` is the wall time that the zones
/// sharing the most users' offset read `lead` from now (to the second); those
/// zones (`first`) get it at `due`, every other zone at the same wall time in
/// its own zone: later today to the west, tomorrow to the east.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub at: NaiveDateTime,
    pub due: DateTime<Utc>,
    pub first: Vec<Tz>,
}

/// Picks the local time of the demo campaign from the zones and their number of
/// users. Pure. `None` when no zone is given.
pub fn pick(zones: &[(Tz, u64)], now: DateTime<Utc>, lead: Duration) -> Option<Pick> {
    let ahead = now + TimeDelta::from_std(lead).ok()?;
    let second = TimeDelta::seconds(1);
    let due = match ahead.duration_trunc(second) {
        Ok(t) if t == ahead => t,
        Ok(t) => t + second,
        Err(_) => ahead,
    };
    // Zones with the same wall time at `due` share its offset.
    let mut groups: Vec<(NaiveDateTime, u64, Vec<Tz>)> = Vec::new();
    for &(tz, users) in zones {
        let wall = due.with_timezone(&tz).naive_local();
        // In an autumn overlap the wall time fires at its first occurrence, not `due`.
        if resolve_local(tz, wall).0 != due {
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == wall) {
            Some(g) => {
                g.1 += users;
                g.2.push(tz);
            }
            None => groups.push((wall, users, vec![tz])),
        }
    }
    // The first of the largest groups.
    let (at, _, first) = groups.into_iter().rev().max_by_key(|g| g.1)?;
    Some(Pick { at, due, first })
}

/// One seeded user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUser {
    pub external_id: String,
    pub zone: &'static str,
    pub locale: &'static str,
    pub devices: Vec<(Platform, String)>,
    /// Explicit marketing choice; `None` leaves the topic's default (off).
    pub marketing: Option<bool>,
}

/// The demo's users, the same for the same `n`: 2% without a device, 15% with
/// both an iPhone and an Android phone, 3% of tokens dead, 85% opted in to
/// marketing and 4% opted out.
pub fn population(n: u32) -> Vec<SeedUser> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    (0..n)
        .map(|i| {
            let (zone, locale) = ZONES[i as usize % ZONES.len()];
            let mut devices = Vec::new();
            if rng.f64() >= 0.02 {
                let first = if rng.bool() {
                    Platform::Ios
                } else {
                    Platform::Android
                };
                devices.push((first, token(&mut rng, first)));
                if rng.f64() < 0.15 {
                    let other = match first {
                        Platform::Ios => Platform::Android,
                        Platform::Android => Platform::Ios,
                    };
                    devices.push((other, token(&mut rng, other)));
                }
            }
            let choice = rng.f64();
            let marketing = if choice < 0.85 {
                Some(true)
            } else if choice < 0.89 {
                Some(false)
            } else {
                None
            };
            SeedUser {
                external_id: format!("demo-user-{i:05}"),
                zone,
                locale,
                devices,
                marketing,
            }
        })
        .collect()
}

/// A token in the platform's format; 3% start with the simulator's dead prefix.
pub(super) fn token(rng: &mut fastrand::Rng, platform: Platform) -> String {
    let hex = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rng.u64(..),
        rng.u64(..),
        rng.u64(..),
        rng.u64(..)
    );
    let dead = rng.f64() < 0.03;
    match (platform, dead) {
        (Platform::Ios, false) => hex,
        (Platform::Ios, true) => format!("{DEAD_PREFIX}{}", &hex[DEAD_PREFIX.len()..]),
        (Platform::Android, false) => format!("f{}:APA91b{}", &hex[..21], &hex[21..]),
        (Platform::Android, true) => format!("{DEAD_PREFIX}-f{}", &hex[..40]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::setup::SeedStats;
    use super::*;
    use crate::domain::zone::parse_zone;
    use chrono::TimeZone;

    fn zones(names: &[&str]) -> Vec<(Tz, u64)> {
        names.iter().map(|n| (parse_zone(n).unwrap(), 10)).collect()
    }

    fn demo_zones() -> Vec<(Tz, u64)> {
        ZONES
            .iter()
            .map(|(n, _)| (parse_zone(n).unwrap(), 10))
            .collect()
    }

    #[test]
    fn every_listed_zone_is_known() {
        for (zone, locale) in ZONES {
            assert!(parse_zone(zone).is_some(), "{zone}");
            assert!(!locale.is_empty());
        }
    }

    #[test]
    fn the_largest_offset_group_comes_due_after_the_lead() {
        // 23 November: central Europe is on UTC+1 and shares it with Lagos.
        let now =
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 6, 11).unwrap() + TimeDelta::milliseconds(400);
        let p = pick(&demo_zones(), now, Duration::from_secs(60)).unwrap();
        assert_eq!(
            p.due,
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 7, 12).unwrap()
        );
        assert_eq!(p.at.to_string(), "2026-11-23 19:07:12");
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert_eq!(
            names,
            [
                "Europe/Berlin",
                "Europe/Paris",
                "Europe/Madrid",
                "Europe/Rome",
                "Europe/Amsterdam",
                "Europe/Warsaw",
                "Europe/Stockholm",
                "Europe/Vienna",
                "Africa/Lagos"
            ]
        );
        // Every first zone reads `at` at `due`; every other zone reads it at
        // least 15 minutes earlier or later (the demo ends before then).
        for (tz, _) in demo_zones() {
            let fires = resolve_local(tz, p.at).0;
            if p.first.contains(&tz) {
                assert_eq!(fires, p.due, "{tz}");
            } else {
                assert!((fires - p.due).abs() >= TimeDelta::minutes(15), "{tz}");
            }
        }
        // London (UTC+0) gets it an hour later, Tokyo's 19:07 is already past.
        let london = resolve_local(parse_zone("Europe/London").unwrap(), p.at).0;
        assert_eq!(london - p.due, TimeDelta::hours(1));
        let tokyo = resolve_local(parse_zone("Asia/Tokyo").unwrap(), p.at).0;
        assert!(tokyo < now);
    }

    #[test]
    fn in_summer_the_group_follows_the_offsets() {
        // 1 July: central Europe is on UTC+2, with Johannesburg; Lagos stays at +1.
        let now = Utc.with_ymd_and_hms(2026, 7, 1, 6, 0, 0).unwrap();
        let p = pick(&demo_zones(), now, Duration::from_secs(3)).unwrap();
        assert_eq!(p.due, now + TimeDelta::seconds(3));
        assert_eq!(p.at.to_string(), "2026-07-01 08:00:03");
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert!(names.contains(&"Africa/Johannesburg"));
        assert!(!names.contains(&"Africa/Lagos"));
        assert_eq!(names[0], "Europe/Berlin");
    }

    #[test]
    fn users_decide_the_group_and_ties_go_to_the_first() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let mut z = zones(&["Asia/Tokyo", "Europe/Berlin", "Asia/Seoul"]);
        let p = pick(&z, now, Duration::from_secs(5)).unwrap();
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert_eq!(names, ["Asia/Tokyo", "Asia/Seoul"]);
        z[1].1 = 25;
        let p = pick(&z, now, Duration::from_secs(5)).unwrap();
        assert_eq!(p.first, [chrono_tz::Europe::Berlin]);
        let p = pick(
            &zones(&["Asia/Kolkata", "Asia/Kathmandu"]),
            now,
            Duration::ZERO,
        );
        assert_eq!(p.unwrap().first, [chrono_tz::Asia::Kolkata]);
        assert_eq!(pick(&[], now, Duration::from_secs(5)), None);
    }

    #[test]
    fn a_wall_time_that_happens_twice_is_not_picked() {
        // 25 October 2026: at 01:00 UTC Berlin went from 03:00 CEST back to
        // 02:00 CET, so at 01:30 UTC it reads 02:30 for the second time.
        let now = Utc.with_ymd_and_hms(2026, 10, 25, 1, 29, 0).unwrap();
        let z = zones(&["Europe/Berlin", "Africa/Lagos"]);
        let p = pick(&z, now, Duration::from_secs(60)).unwrap();
        // Berlin's 02:30 would fire at its first occurrence, an hour ago: only Lagos.
        assert_eq!(p.first, [chrono_tz::Africa::Lagos]);
        assert_eq!(p.at.to_string(), "2026-10-25 02:30:00");
    }

    #[test]
    fn the_population_is_the_same_every_run_and_mixed() {
        let a = population(3000);
        assert_eq!(a, population(3000));
        let s = SeedStats::of(&a);
        assert_eq!(s.zones.len(), ZONES.len());
        assert!(s.zones.iter().all(|(_, n)| *n >= 3000 / ZONES.len() as u64));
        let devices = s.ios + s.android;
        assert!((3300..3600).contains(&devices), "{devices}");
        assert!(s.ios > 1000 && s.android > 1000);
        assert!((40..200).contains(&s.dead), "{}", s.dead);
        assert!((2400..2700).contains(&s.opted_in), "{}", s.opted_in);
        assert!(a.iter().any(|p| p.devices.is_empty()));
        for p in &a {
            for (platform, token) in &p.devices {
                if *platform == Platform::Ios {
                    assert_eq!(token.len(), 64);
                    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
                }
                crate::domain::audience::check_token(*platform, token).unwrap();
            }
        }
    }
}
