//! The plan's timeline: each send instant as a mark on the UTC hours of the
//! campaign, its area proportional to its recipients, laid out in lanes so
//! that no two marks (or their labels) overlap. Zones that send at the same
//! instant (Berlin, Paris, Rome…) share one mark that names them all: a
//! realistic audience in 400 zones has only a few dozen distinct instants.
//! Pure geometry for the SVG the template draws.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The drawing's width in SVG units; the page scales it to the screen.
pub const WIDTH: f64 = 1000.0;
const LEFT: f64 = 45.0;
const RIGHT: f64 = 45.0;
const AXIS: f64 = 34.0;
const MAX_R: f64 = 16.0;
const MIN_R: f64 = 3.0;

/// One zone's send to draw.
#[derive(Debug, Clone)]
pub struct Send {
    pub zone: String,
    pub at: DateTime<Utc>,
    pub recipients: i64,
    pub disposition: String,
    /// What the mark's tooltip says (zone, local time, recipients).
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub y: f64,
    pub r: f64,
    /// The zones sending at this instant, space separated (for selectors).
    pub zones: String,
    pub utc: String,
    pub disposition: String,
    /// The tooltip: each zone's line.
    pub label: String,
    /// The short name drawn beside the mark (`Kathmandu`, `Berlin +11`).
    pub name: String,
    pub recipients: i64,
}

/// Roughly how wide a label is drawn, in SVG units (11px text).
fn label_width(name: &str) -> f64 {
    name.chars().count() as f64 * 6.2
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub height: f64,
    pub marks: Vec<Mark>,
    pub ticks: Vec<Tick>,
}

/// Lays out the sends with recipients; `None` when there is none to draw.
pub fn layout(sends: &[Send]) -> Option<Timeline> {
    let sends: Vec<&Send> = sends.iter().filter(|s| s.recipients > 0).collect();
    let first = sends.iter().map(|s| s.at).min()?;
    let last = sends.iter().map(|s| s.at).max()?;
    let hour = TimeDelta::hours(1);
    let start = first.duration_trunc(hour).unwrap_or(first);
    let mut end = last.duration_trunc(hour).unwrap_or(last) + hour;
    if end - start < TimeDelta::hours(2) {
        end = start + TimeDelta::hours(2);
    }
    let span = (end - start).num_seconds() as f64;
    let x_of =
        |t: DateTime<Utc>| LEFT + (t - start).num_seconds() as f64 / span * (WIDTH - LEFT - RIGHT);
    // One mark per instant; its zones in order of recipients.
    let mut instants: std::collections::BTreeMap<DateTime<Utc>, Vec<&Send>> =
        std::collections::BTreeMap::new();
    for s in &sends {
        instants.entry(s.at).or_default().push(s);
    }
    let groups: Vec<(DateTime<Utc>, Vec<&Send>, i64)> = instants
        .into_iter()
        .map(|(at, mut zones)| {
            zones.sort_by(|a, b| b.recipients.cmp(&a.recipients).then(a.zone.cmp(&b.zone)));
            let n = zones.iter().map(|s| s.recipients).sum();
            (at, zones, n)
        })
        .collect();
    let most = groups.iter().map(|g| g.2).max().unwrap_or(1).max(1) as f64;
    // Greedy lanes: each mark goes in the first lane whose last label it clears.
    let mut lane_ends: Vec<f64> = Vec::new();
    let mut marks = Vec::with_capacity(groups.len());
    for (at, zones, recipients) in groups {
        let r = MIN_R + (MAX_R - MIN_R) * (recipients as f64 / most).sqrt();
        let x = x_of(at);
        let city = |z: &str| z.rsplit('/').next().unwrap_or(z).replace('_', " ");
        let name = match zones.len() {
            1 => city(&zones[0].zone),
            n => format!("{} +{}", city(&zones[0].zone), n - 1),
        };
        let lane = match lane_ends.iter().position(|end| *end + 4.0 <= x - r) {
            Some(l) => l,
            None => {
                lane_ends.push(f64::MIN);
                lane_ends.len() - 1
            }
        };
        lane_ends[lane] = x + r + 3.0 + label_width(&name);
        marks.push(Mark {
            x,
            y: MAX_R + 4.0 + lane as f64 * (2.0 * MAX_R + 4.0),
            r,
            zones: zones
                .iter()
                .map(|s| s.zone.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            utc: at.format("%Y-%m-%d %H:%M").to_string(),
            disposition: zones[0].disposition.clone(),
            label: zones
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            name,
            recipients,
        });
    }
    let lanes = lane_ends.len().max(1) as f64;
    let hours = (end - start).num_hours().max(1);
    // At most about a dozen labelled ticks, on whole hours.
    let step = [1, 2, 3, 6, 12, 24, 48, 168]
        .into_iter()
        .find(|s| hours / s <= 12)
        .unwrap_or(168);
    let mut ticks = Vec::new();
    let mut t = start;
    let mut last_day = None;
    while t <= end {
        let day = t.date_naive();
        let label = if last_day == Some(day) {
            t.format("%H:%M").to_string()
        } else {
            t.format("%d %b %H:%M").to_string()
        };
        last_day = Some(day);
        ticks.push(Tick { x: x_of(t), label });
        t += TimeDelta::hours(step);
    }
    Some(Timeline {
        height: lanes * (2.0 * MAX_R + 4.0) + AXIS,
        marks,
        ticks,
    })
}

impl Timeline {
    /// Where the axis line is drawn.
    pub fn axis_y(&self) -> f64 {
        self.height - AXIS + 6.0
    }

    pub fn width(&self) -> f64 {
        WIDTH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(zone: &str, at: &str, n: i64) -> Send {
        Send {
            zone: zone.to_owned(),
            at: at.parse().unwrap(),
            recipients: n,
            disposition: "on_time".to_owned(),
            label: zone.to_owned(),
        }
    }

    #[test]
    fn marks_sit_at_their_utc_instant_sized_by_recipients_without_overlap() {
        let t = layout(&[
            send("Asia/Kathmandu", "2031-03-31T03:15:00Z", 100),
            send("Asia/Kolkata", "2031-03-31T03:30:00Z", 400),
            send("Europe/Berlin", "2031-03-31T07:00:00Z", 400),
            send("Empty/Zone", "2031-03-31T05:00:00Z", 0),
        ])
        .unwrap();
        assert_eq!(t.marks.len(), 3, "zones without recipients are not drawn");
        let k = t
            .marks
            .iter()
            .find(|m| m.zones == "Asia/Kathmandu")
            .unwrap();
        let b = t.marks.iter().find(|m| m.zones == "Europe/Berlin").unwrap();
        let i = t.marks.iter().find(|m| m.zones == "Asia/Kolkata").unwrap();
        assert_eq!(k.name, "Kathmandu");
        // 03:00 to 08:00 is the span: 03:15 is 1/20 of the way along.
        let along = |m: &Mark| (m.x - LEFT) / (WIDTH - LEFT - RIGHT);
        assert!((along(k) - 0.05).abs() < 1e-9, "{}", along(k));
        assert!((along(b) - 0.8).abs() < 1e-9);
        // Four times the recipients, twice the radius (area is what counts).
        assert!(((b.r - MIN_R) / (k.r - MIN_R) - 2.0).abs() < 1e-9);
        // Kathmandu and Kolkata are 15 minutes apart: they do not overlap.
        let d = ((k.x - i.x).powi(2) + (k.y - i.y).powi(2)).sqrt();
        assert!(d >= k.r + i.r, "overlap: {d}");
        assert_eq!(k.utc, "2031-03-31 03:15");
        assert_eq!(t.ticks.first().unwrap().label, "31 Mar 03:00");
        assert!(layout(&[send("X", "2031-03-31T03:15:00Z", 0)]).is_none());
    }

    #[test]
    fn zones_sending_at_one_instant_share_a_mark() {
        let t = layout(&[
            send("Europe/Berlin", "2031-03-31T07:00:00Z", 5),
            send("Europe/Paris", "2031-03-31T07:00:00Z", 9),
            send("Europe/Rome", "2031-03-31T07:00:00Z", 1),
        ])
        .unwrap();
        assert_eq!(t.marks.len(), 1);
        let m = &t.marks[0];
        assert_eq!(m.recipients, 15);
        assert_eq!(m.name, "Paris +2");
        assert_eq!(m.zones, "Europe/Paris Europe/Berlin Europe/Rome");
    }
}
