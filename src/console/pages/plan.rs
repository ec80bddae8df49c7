//! A campaign's plan: when each zone gets the message, on a UTC timeline and
//! zone by zone, with who was left out. A draft's plan is computed as if it
//! were scheduled now (nothing is written); a scheduled or running campaign's
//! is its stored slots, with the counts of the live snapshot.

use std::collections::BTreeMap;

use chrono::Offset;

use super::*;
use crate::console::timeline::{self, Send, Timeline};
use crate::domain::campaign::DesiredStatus;
use crate::domain::planner::ALL_ZONES;

struct ZoneRow {
    zone: String,
    local: String,
    utc: String,
    disposition: String,
    disposition_text: &'static str,
    recipients: i64,
    left_out: String,
    dst: String,
    state: String,
}

#[derive(Template)]
#[template(path = "console/plan.html")]
struct PlanPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    id: i64,
    name: String,
    state: String,
    /// A draft's plan as if scheduled now.
    draft: bool,
    problem: Option<String>,
    timeline: Option<Timeline>,
    rows: Vec<ZoneRow>,
    /// Zones with a send but nobody in them yet.
    empty: usize,
    recipients: i64,
    left_out: String,
    can_schedule: bool,
}

/// What a disposition means, in words.
fn disposition_text(d: &str) -> &'static str {
    match d {
        "on_time" => "on time",
        "gap_shifted" => "moved out of a DST gap",
        "quiet_hours" => "after quiet hours",
        "late_send_now" => "late: sent at once",
        "next_day" => "next day",
        "skipped" => "skipped: the time had passed",
        _ => "",
    }
}

/// A note when the zone's clocks change within a week of the send: the
/// offset shown is the one that holds at the send, and this says so.
fn dst_note(zone: &str, at: DateTime<Utc>) -> String {
    let Some(tz) = crate::domain::zone::parse_zone(zone) else {
        return String::new();
    };
    let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
    let (before, then, after) = (
        offset(at - TimeDelta::days(7)),
        offset(at),
        offset(at + TimeDelta::days(7)),
    );
    if before != then {
        format!("clocks changed in the week before: UTC{before} → UTC{then}")
    } else if after != then {
        format!("clocks change in the week after: UTC{then} → UTC{after}")
    } else {
        String::new()
    }
}

fn reasons(counts: Option<&BTreeMap<String, i64>>) -> String {
    let parts: Vec<String> = counts
        .into_iter()
        .flatten()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{} {n}", reason.replace('_', " ")))
        .collect();
    parts.join(", ")
}

/// One planned send, as the page and the timeline see it.
struct PlannedSend {
    zone: String,
    at: DateTime<Utc>,
    disposition: String,
    recipients: i64,
    left_out: Option<BTreeMap<String, i64>>,
    state: String,
}

/// A draft's plan as if it were scheduled now, or why it cannot be: planned
/// at most every 30 s per revision (it counts the whole audience), shared by
/// the plan page and the schedule confirmation.
pub(super) async fn draft_plan<S: Store>(
    st: &ConsoleState<S>,
    c: &crate::store::CampaignRecord,
) -> Result<std::sync::Arc<Result<crate::domain::planner::Plan, String>>, PageError> {
    st.draft_plans
        .get((c.id, c.revision), || async {
            let mut def = definitions::stored_definition(c)?;
            def.status = DesiredStatus::Scheduled;
            match definitions::prepare(&*st.store, &st.config, &def, st.clock.now()).await {
                Ok(prepared) => {
                    Ok(Some(prepared.plan.ok_or_else(|| {
                        "a scheduled definition was not planned".to_owned()
                    })))
                }
                Err(e) if e.is_input() => Ok(Some(Err(e.to_string()))),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .ok_or(PageError::NotFound)
}

pub async fn campaign_plan<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let c = campaign_of(&st, &app, id).await?;
    let default_zone = st.config.app(&app).map(|a| a.timezone());
    let draft = c.state == CampaignState::Draft;
    let mut problem = None;
    let sends: Vec<PlannedSend> = if draft {
        let planned = draft_plan(&st, &c).await?;
        match &*planned {
            Ok(plan) => plan
                .slots
                .iter()
                .map(|p| PlannedSend {
                    zone: p.zone.clone(),
                    at: p.fire_at,
                    disposition: p.disposition.as_str().to_owned(),
                    recipients: i64::try_from(p.recipients).unwrap_or(i64::MAX),
                    left_out: None,
                    state: "not scheduled".to_owned(),
                })
                .collect(),
            Err(problem_text) => {
                problem = Some(problem_text.clone());
                Vec::new()
            }
        }
    } else {
        let snap = st
            .live
            .get(&*st.store, &app, id)
            .await?
            .ok_or(PageError::NotFound)?;
        snap.slots
            .iter()
            .map(|x| PlannedSend {
                zone: x.zone.clone(),
                at: x.fire_at,
                disposition: x.disposition.clone(),
                // Once released, the count of that moment; before, the plan's.
                recipients: snap
                    .recipients
                    .get(&x.id)
                    .copied()
                    .unwrap_or(x.planned_count),
                left_out: snap.excluded.get(&x.id).cloned(),
                state: x.state.to_string(),
            })
            .collect()
    };
    let zone_name = |z: &str| match z {
        ALL_ZONES => "everyone at once".to_owned(),
        "" => "no zone known (app's default)".to_owned(),
        z => z.to_owned(),
    };
    let mut total_left: BTreeMap<String, i64> = BTreeMap::new();
    for s in &sends {
        for (reason, n) in s.left_out.iter().flatten() {
            *total_left.entry(reason.clone()).or_default() += n;
        }
        if s.disposition == "skipped" {
            *total_left.entry("skipped".to_owned()).or_default() += s.recipients;
        }
    }
    let drawn: Vec<Send> = sends
        .iter()
        .filter(|s| s.disposition != "skipped")
        .map(|s| Send {
            zone: s.zone.clone(),
            at: s.at,
            recipients: s.recipients,
            disposition: s.disposition.clone(),
            label: format!(
                "{}: {} local, {} UTC, {} recipient(s)",
                zone_name(&s.zone),
                local_time(&s.zone, s.at, default_zone),
                minute(s.at),
                s.recipients
            ),
        })
        .collect();
    let (shown, empty): (Vec<&PlannedSend>, Vec<&PlannedSend>) = sends
        .iter()
        .partition(|s| s.recipients > 0 || s.left_out.as_ref().is_some_and(|l| !l.is_empty()));
    let rows = shown
        .into_iter()
        .map(|s| ZoneRow {
            zone: zone_name(&s.zone),
            local: local_time(&s.zone, s.at, default_zone),
            utc: minute(s.at),
            disposition_text: disposition_text(&s.disposition),
            disposition: s.disposition.clone(),
            recipients: s.recipients,
            left_out: reasons(s.left_out.as_ref()),
            dst: dst_note(&s.zone, s.at),
            state: s.state.clone(),
        })
        .collect();
    let html = PlanPage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        id,
        name: c.name.clone(),
        state: c.state.to_string(),
        draft,
        problem,
        timeline: timeline::layout(&drawn),
        rows,
        empty: empty.len(),
        recipients: sends
            .iter()
            .filter(|s| s.disposition != "skipped")
            .map(|s| s.recipients)
            .sum(),
        left_out: reasons(Some(&total_left)),
        can_schedule: draft && s.session.role.can(Permission::EditCampaigns),
    }
    .render()?;
    Ok(Html(html).into_response())
}
