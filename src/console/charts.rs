//! Bar charts as server-rendered SVG (sends per minute, sends per hour) and
//! the sent → delivered → opened funnel. Pure: numbers in, geometry out.

use chrono::{DateTime, TimeDelta, Utc};

pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 160.0;
const AXIS: f64 = 18.0;
/// More bars than this are merged into wider buckets.
pub const MAX_BARS: usize = 120;

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// The tooltip: the bucket's start and its count.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub bars: Vec<Bar>,
    pub max: i64,
    pub total: i64,
    /// What one bar covers (`1 min`, `5 min`, `1 h`).
    pub bucket: String,
    pub first: String,
    pub last: String,
}

impl BarChart {
    pub fn width(&self) -> f64 {
        WIDTH
    }
    pub fn height(&self) -> f64 {
        HEIGHT
    }
    pub fn axis_y(&self) -> f64 {
        HEIGHT - AXIS
    }
    pub fn label_y(&self) -> f64 {
        HEIGHT - 4.0
    }
}

/// Counts per time step, from `start` for `steps` steps of `step` (missing
/// steps are zero), merged so that at most [`MAX_BARS`] bars are drawn.
pub fn bars(
    counts: &[(DateTime<Utc>, i64)],
    start: DateTime<Utc>,
    steps: usize,
    step: TimeDelta,
) -> BarChart {
    let steps = steps.max(1);
    let merge = steps.div_ceil(MAX_BARS);
    let buckets = steps.div_ceil(merge);
    let width = step * i32::try_from(merge).unwrap_or(i32::MAX);
    let mut values = vec![0i64; buckets];
    for (at, n) in counts {
        let offset = (*at - start).num_seconds();
        if offset < 0 {
            continue;
        }
        let i = (offset / width.num_seconds().max(1)) as usize;
        if let Some(v) = values.get_mut(i) {
            *v += n;
        }
    }
    let max = values.iter().copied().max().unwrap_or(0);
    let slot = WIDTH / buckets as f64;
    let plot = HEIGHT - AXIS - 4.0;
    let fmt = |t: DateTime<Utc>| t.format("%d %b %H:%M").to_string();
    let bars = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let h = if max == 0 {
                0.0
            } else {
                plot * *v as f64 / max as f64
            };
            let at = start + width * i32::try_from(i).unwrap_or(i32::MAX);
            Bar {
                x: i as f64 * slot + slot * 0.1,
                y: HEIGHT - AXIS - h,
                w: slot * 0.8,
                h,
                label: format!("{} UTC: {v}", fmt(at)),
            }
        })
        .collect();
    let minutes = width.num_minutes();
    BarChart {
        bars,
        max,
        total: values.iter().sum(),
        bucket: if minutes >= 60 && minutes % 60 == 0 {
            format!("{} h", minutes / 60)
        } else {
            format!("{minutes} min")
        },
        first: fmt(start),
        last: fmt(start + step * i32::try_from(steps).unwrap_or(i32::MAX)),
    }
}

/// Sends per minute of a campaign, from its first send's minute to its last.
pub fn per_minute(minutes: &[(i64, i64)]) -> Option<BarChart> {
    let first = minutes.first()?.0;
    let last = minutes.last()?.0;
    let at = |m: i64| DateTime::<Utc>::from_timestamp(m * 60, 0);
    let start = at(first)?;
    let counts: Vec<(DateTime<Utc>, i64)> = minutes
        .iter()
        .filter_map(|(m, n)| Some((at(*m)?, *n)))
        .collect();
    let steps = usize::try_from(last - first + 1).ok()?;
    Some(bars(&counts, start, steps, TimeDelta::minutes(1)))
}

/// One step of the funnel: how many, and their share of those sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: &'static str,
    pub count: i64,
    /// Percent of sent, one decimal; empty when nothing was sent.
    pub rate: String,
    /// The bar's width in percent.
    pub width: f64,
}

/// Sent → delivered → opened from deliveries by status: a message that was
/// opened was delivered and sent, so each stage counts the ones after it.
pub fn funnel(by_status: &std::collections::BTreeMap<String, i64>) -> Vec<Stage> {
    let n = |s: &str| by_status.get(s).copied().unwrap_or(0);
    let opened = n("opened");
    let delivered = n("delivered") + n("dismissed") + opened;
    let sent = n("sent") + delivered;
    [("sent", sent), ("delivered", delivered), ("opened", opened)]
        .into_iter()
        .map(|(name, count)| Stage {
            name,
            count,
            rate: if sent == 0 {
                String::new()
            } else {
                format!("{:.1}%", 100.0 * count as f64 / sent as f64)
            },
            width: if sent == 0 {
                0.0
            } else {
                100.0 * count as f64 / sent as f64
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_without_sends_are_zero_bars_and_long_runs_are_merged() {
        let base = 29_000_000; // minutes since 1970
        let chart = per_minute(&[(base, 10), (base + 3, 30)]).unwrap();
        assert_eq!(chart.bars.len(), 4);
        assert_eq!(chart.max, 30);
        assert_eq!(chart.total, 40);
        assert_eq!(chart.bars[1].h, 0.0);
        assert!((chart.bars[3].h - (HEIGHT - AXIS - 4.0)).abs() < 1e-9);
        assert!((chart.bars[0].h * 3.0 - chart.bars[3].h).abs() < 1e-9);
        assert_eq!(chart.bucket, "1 min");
        // Ten hours of minutes: merged into at most 120 bars of 5 minutes.
        let long = per_minute(&[(base, 1), (base + 599, 2)]).unwrap();
        assert_eq!(long.bars.len(), 120);
        assert_eq!(long.bucket, "5 min");
        assert_eq!(long.total, 3);
        assert!(per_minute(&[]).is_none());
    }

    #[test]
    fn the_funnel_counts_each_stage_with_those_after_it() {
        let counts = [
            ("sent", 50),
            ("delivered", 30),
            ("opened", 20),
            ("failed", 7),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let f = funnel(&counts);
        assert_eq!(
            f.iter().map(|s| (s.name, s.count)).collect::<Vec<_>>(),
            vec![("sent", 100), ("delivered", 50), ("opened", 20)]
        );
        assert_eq!(f[2].rate, "20.0%");
        assert_eq!(funnel(&Default::default())[0].rate, "");
    }
}
