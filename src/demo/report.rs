//! What the demo shows: progress while the first zones are sent, then a summary and next steps.

use super::population::Pick;
use super::{Options, PushSent, APP, CAMPAIGN_KEY, CONFIG_FILE};
use crate::clock::Clock;
use crate::domain::state::{DeliveryStatus, SlotState, StateMachine};
use crate::domain::zone::parse_zone;
use crate::store::{DeliveryFilter, SlotRecord, Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Statuses a delivery can still leave on its own.
pub(super) fn in_progress(status: &str) -> bool {
    matches!(
        DeliveryStatus::parse(status),
        Ok(DeliveryStatus::Queued | DeliveryStatus::Leased | DeliveryStatus::Retry)
    )
}

/// Statuses that mean the provider accepted the message.
pub(super) fn accepted(status: &str) -> bool {
    matches!(
        DeliveryStatus::parse(status),
        Ok(DeliveryStatus::Sent
            | DeliveryStatus::Delivered
            | DeliveryStatus::Opened
            | DeliveryStatus::Dismissed)
    )
}

/// Where the first zones and the push are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Progress {
    pub(super) zones: usize,
    pub(super) released: usize,
    pub(super) completed: usize,
    pub(super) recipients: i64,
    pub(super) recorded: i64,
    pub(super) sent: i64,
    pub(super) invalid: i64,
    pub(super) push_total: usize,
    pub(super) push_sent: usize,
    pub(super) push_settled: usize,
}

impl Progress {
    pub(super) fn done(&self) -> bool {
        self.zones > 0 && self.completed == self.zones && self.push_settled == self.push_total
    }

    /// Short enough for an 80-column terminal beside the bar.
    pub(super) fn describe(&self, until_due: i64) -> String {
        let push = format!("push {}/{}", self.push_sent, self.push_total);
        if self.released == 0 && self.recorded == 0 && until_due > 0 {
            return format!("{} zones due in {until_due} s, {push}", self.zones);
        }
        format!(
            "{}/{} zones done, {} sent, {} invalid, {push}",
            self.completed, self.zones, self.sent, self.invalid
        )
    }
}

/// The slots due at the picked instant that have recipients: the first zones.
pub(super) fn first_zones<'a>(slots: &'a [SlotRecord], picked: &Pick) -> Vec<&'a SlotRecord> {
    slots
        .iter()
        .filter(|s| s.fire_at <= picked.due && s.planned_count > 0)
        .collect()
}

pub(super) async fn progress<S: Store>(
    store: &S,
    campaign_id: i64,
    picked: &Pick,
    request_id: &str,
) -> Result<Progress, StoreError> {
    let slots = store.slot_list(campaign_id).await?;
    let first = first_zones(&slots, picked);
    let ids: HashSet<i64> = first.iter().map(|s| s.id).collect();
    let mut p = Progress {
        zones: first.len(),
        released: first
            .iter()
            .filter(|s| s.state != SlotState::Pending)
            .count(),
        completed: first
            .iter()
            .filter(|s| s.state == SlotState::Completed)
            .count(),
        recipients: first.iter().map(|s| s.planned_count).sum(),
        ..Progress::default()
    };
    for (slot, status, n) in store.delivery_count_by_slot(campaign_id).await? {
        if !ids.contains(&slot) {
            continue;
        }
        if !in_progress(&status) {
            p.recorded += n;
        }
        if accepted(&status) {
            p.sent += n;
        } else if status == DeliveryStatus::TokenInvalid.as_str() {
            p.invalid += n;
        }
    }
    let messages = store.message_list(APP, &push_filter(request_id)).await?;
    p.push_total = messages.len();
    p.push_sent = messages.iter().filter(|m| accepted(&m.status)).count();
    p.push_settled = messages.iter().filter(|m| !in_progress(&m.status)).count();
    Ok(p)
}

pub(super) fn push_filter(request_id: &str) -> DeliveryFilter<'_> {
    DeliveryFilter {
        request_id: Some(request_id),
        limit: 1000,
        ..DeliveryFilter::default()
    }
}

/// Shows progress until the first zones are completed and the push settled, or
/// until `deadline`. Returns whether they were.
pub(super) async fn watch<S: Store>(
    store: &S,
    campaign_id: i64,
    picked: &Pick,
    request_id: &str,
    deadline: DateTime<Utc>,
    console: &Console,
    clock: &dyn Clock,
) -> Result<bool, StoreError> {
    let mut bar: Option<Bar> = None;
    let mut last_line: Option<(DateTime<Utc>, String)> = None;
    loop {
        let p = progress(store, campaign_id, picked, request_id).await?;
        let now = clock.now();
        let until_due = (picked.due - now).num_seconds() + 1;
        let text = p.describe(until_due.max(0));
        let bar = bar.get_or_insert_with(|| console.bar(p.recipients.max(1) as u64, ""));
        bar.set_position(p.recorded as u64);
        bar.set_message(&text);
        if !console.terminal {
            // Off a terminal: a plain line when something changed, at most every 5 s.
            let due = last_line
                .as_ref()
                .is_none_or(|(at, said)| *said != text && now - *at >= TimeDelta::seconds(5));
            if due || p.done() {
                console.line(&format!("  {text}"));
                last_line = Some((now, text));
            }
        }
        if p.done() || now >= deadline {
            bar.finish_and_clear();
            return Ok(p.done());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The per-zone table, the counts by status and who was left out.
pub(super) async fn summary<S: Store>(
    store: &S,
    campaign_id: i64,
    push: &PushSent,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let slots = store.slot_list(campaign_id).await?;
    let mut delivered: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for (slot, status, n) in store.delivery_count_by_slot(campaign_id).await? {
        *delivered
            .entry(slot)
            .or_default()
            .entry(status)
            .or_default() += n;
    }
    let mut recipients: BTreeMap<i64, i64> = BTreeMap::new();
    let mut excluded: BTreeMap<String, i64> = BTreeMap::new();
    for (slot, kind, n) in store.slot_count_by_state(campaign_id).await? {
        match kind.strip_prefix("excluded:") {
            Some(reason) if n > 0 => *excluded.entry(reason.to_owned()).or_default() += n,
            Some(_) => {}
            None if kind == "recipients" => *recipients.entry(slot).or_default() += n,
            None => {}
        }
    }
    let mut shown: Vec<&SlotRecord> = slots.iter().filter(|s| s.planned_count > 0).collect();
    shown.sort_by(|a, b| (a.fire_at, &a.zone).cmp(&(b.fire_at, &b.zone)));
    let mut out = vec![
        String::new(),
        format!(
            "{:<31} {:<20} {:<20} {:>10} {:>6} {:>8} {:>6}",
            "ZONE", "LOCAL DUE", "STATE", "RECIPIENTS", "SENT", "INVALID", "FAILED"
        ),
    ];
    for s in shown {
        let local = parse_zone(&s.zone).map_or_else(
            || s.fire_at.format("%a %H:%M:%S UTC").to_string(),
            |tz| {
                s.fire_at
                    .with_timezone(&tz)
                    .format("%a %H:%M:%S %Z")
                    .to_string()
            },
        );
        let state = if s.state == SlotState::Pending {
            format!("pending, in {}", span(s.fire_at - now))
        } else {
            s.state.to_string()
        };
        let counts = delivered.get(&s.id);
        let sum = |f: &dyn Fn(&str) -> bool| -> i64 {
            counts.map_or(0, |c| c.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum())
        };
        let sent = sum(&accepted);
        let invalid = sum(&|k| k == DeliveryStatus::TokenInvalid.as_str());
        // Final without reaching the device for another reason (failed, expired).
        let failed =
            sum(&|k| !accepted(k) && !in_progress(k) && k != DeliveryStatus::TokenInvalid.as_str());
        let (sent, invalid, failed) = if s.state == SlotState::Pending {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            (sent.to_string(), invalid.to_string(), failed.to_string())
        };
        out.push(format!(
            "{:<31} {:<20} {:<20} {:>10} {:>6} {:>8} {:>6}",
            s.zone,
            local,
            state,
            recipients.get(&s.id).copied().unwrap_or(s.planned_count),
            sent,
            invalid,
            failed
        ));
    }
    out.push(String::new());
    let by_status = store.delivery_count_by_status(campaign_id).await?;
    out.push(format!(
        "Campaign deliveries by status: {}",
        counts_line(by_status.iter().map(|(k, n)| (k.as_str(), *n)))
    ));
    if !excluded.is_empty() {
        out.push(format!(
            "Left out when the zones were released: {}",
            counts_line(excluded.iter().map(|(k, n)| (k.as_str(), *n)))
        ));
    }
    let messages = store
        .message_list(APP, &push_filter(&push.request_id))
        .await?;
    let mut push_counts: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &messages {
        *push_counts.entry(m.status.as_str()).or_default() += 1;
    }
    let unknown = if push.unknown.is_empty() {
        String::new()
    } else {
        format!("; unknown ids: {}", push.unknown.join(", "))
    };
    out.push(format!(
        "Transactional push {} by status: {}{unknown}",
        push.request_id,
        counts_line(push_counts.into_iter())
    ));
    Ok(out)
}

pub(super) fn counts_line<'a>(counts: impl Iterator<Item = (&'a str, i64)>) -> String {
    let parts: Vec<String> = counts.map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        "none yet".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `45 s`, `59 min`, `2h 05m`.
pub(super) fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Where to look next: the API with the demo's key, and the CLI on its database.
pub(super) fn next_steps(
    options: &Options,
    api: &str,
    key: &str,
    campaign_id: i64,
    request_id: &str,
) -> Vec<String> {
    let program = &options.program;
    let config = options.dir.join(CONFIG_FILE);
    let running = if options.keep_running {
        "The API and the simulator keep running until Ctrl-C.".to_owned()
    } else {
        format!("The API and the simulator stop with the demo; `{program} demo --keep-running` keeps them up until Ctrl-C.")
    };
    vec![
        String::new(),
        "Where to look next".to_owned(),
        format!("  {running}"),
        format!("  KEY={key}"),
        format!("  curl \"{api}/v1/messages?campaign={campaign_id}&status=token_invalid&limit=5\" -H \"Authorization: Bearer $KEY\""),
        format!("  curl \"{api}/v1/messages?request={request_id}\" -H \"Authorization: Bearer $KEY\""),
        format!("  curl {api}/v1/campaigns/{campaign_id}/slots -H \"Authorization: Bearer $KEY\""),
        format!("  {api}/console in a browser (the account printed above)"),
        format!("  curl {api}/health"),
        format!("  curl {api}/metrics"),
        format!(
            "  {program} --config {} campaign show {CAMPAIGN_KEY}   (the demo database, any time)",
            config.display()
        ),
    ]
}

/// Lines on stdout, and progress bars on stderr when it is a terminal.
pub(super) struct Console {
    pub(super) terminal: bool,
}

/// A progress bar, or nothing off a terminal.
pub(super) struct Bar(indicatif::ProgressBar);

impl Bar {
    pub(super) fn set_position(&self, n: u64) {
        self.0.set_position(n);
    }

    pub(super) fn set_message(&self, text: &str) {
        self.0.set_message(text.to_owned());
    }

    pub(super) fn finish_and_clear(&self) {
        self.0.finish_and_clear();
    }
}

impl Console {
    pub(super) fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn bar(&self, len: u64, message: &str) -> Bar {
        if !self.terminal {
            return Bar(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:14} {pos}/{len} {wide_msg}")
        {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        Bar(bar)
    }

    /// A line on stdout; a closed stdout is not the demo's failure.
    pub(super) fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_hours_and_minutes() {
        assert_eq!(span(TimeDelta::seconds(42)), "42 s");
        assert_eq!(span(TimeDelta::seconds(3599)), "59 min");
        assert_eq!(span(TimeDelta::minutes(61)), "1h 01m");
        assert_eq!(span(TimeDelta::hours(23)), "23h 00m");
        assert_eq!(span(TimeDelta::seconds(-3)), "0 s");
    }
}
