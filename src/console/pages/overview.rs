//! An app at a glance: its audience, its topics, the campaigns running and
//! scheduled, and its messages of the last 24 hours. Counted at most every
//! [`crate::console::OVERVIEW_FRESH_FOR`] per app, however many watch.

use std::collections::BTreeMap;

use super::*;
use crate::console::charts::{self, BarChart};
use crate::store::AppOverview;

struct TopicRow {
    name: String,
    default_subscribed: bool,
    opted_in: i64,
    opted_out: i64,
}

struct CampaignLine {
    id: i64,
    name: String,
    state: String,
    next_send: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    users: i64,
    devices: Vec<(String, i64)>,
    invalid_devices: i64,
    topics: Vec<TopicRow>,
    campaigns: Vec<CampaignLine>,
    chart: BarChart,
    /// Messages of the last 24 hours with an outcome, and the shares that failed.
    settled: i64,
    failure_rate: String,
    invalid_rate: String,
    counted_at: String,
}

const SENT: &[&str] = &["sent", "delivered", "opened", "dismissed"];

fn rate(n: i64, of: i64) -> String {
    if of == 0 {
        "—".to_owned()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / of as f64)
    }
}

pub async fn overview<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let now = st.clock.now();
    // The chart's 24 hours end with the current one.
    let start = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now) - TimeDelta::hours(23);
    let store = st.store.clone();
    let counted: std::sync::Arc<(DateTime<Utc>, AppOverview)> = st
        .overviews
        .get(app.clone(), || async {
            let o = store.app_overview(&app, start).await?;
            Ok::<_, StoreError>(Some((now, o)))
        })
        .await?
        .ok_or(PageError::NotFound)?;
    let (at, o) = &*counted;
    let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
    let mut sent_by_hour = Vec::new();
    for (hour, status, n) in &o.messages {
        *by_status.entry(status.as_str()).or_default() += n;
        if SENT.contains(&status.as_str()) {
            if let Some(t) = DateTime::<Utc>::from_timestamp(hour * 3600, 0) {
                sent_by_hour.push((t, *n));
            }
        }
    }
    let count = |which: &[&str]| -> i64 { which.iter().filter_map(|s| by_status.get(s)).sum() };
    let failed = count(&["failed"]);
    let invalid = count(&["token_invalid"]);
    let settled = count(SENT) + failed + invalid;
    let chart_start = at.duration_trunc(TimeDelta::hours(1)).unwrap_or(*at) - TimeDelta::hours(23);
    let app_config = st.config.app(&app);
    let mut topics: Vec<TopicRow> = app_config
        .map(|a| {
            a.topics
                .iter()
                .map(|(name, t)| TopicRow {
                    name: name.clone(),
                    default_subscribed: t.default_subscribed,
                    opted_in: 0,
                    opted_out: 0,
                })
                .collect()
        })
        .unwrap_or_default();
    for (name, opted_in, opted_out) in &o.topics {
        if let Some(row) = topics.iter_mut().find(|t| &t.name == name) {
            row.opted_in = *opted_in;
            row.opted_out = *opted_out;
        }
    }
    let next = st.store.campaign_next_send_list(&app).await?;
    let campaigns = st
        .store
        .campaign_list(Some(&app))
        .await?
        .into_iter()
        .filter(|c| {
            matches!(
                c.state,
                CampaignState::Running | CampaignState::Scheduled | CampaignState::Paused
            )
        })
        .map(|c| CampaignLine {
            next_send: next
                .get(&c.id)
                .map_or_else(|| "—".to_owned(), |t| minute(*t)),
            id: c.id,
            name: c.name,
            state: c.state.to_string(),
        })
        .collect();
    let html = OverviewPage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        users: o.users,
        devices: o.devices.clone(),
        invalid_devices: o.invalid_devices,
        topics,
        campaigns,
        chart: charts::bars(&sent_by_hour, chart_start, 24, TimeDelta::hours(1)),
        settled,
        failure_rate: rate(failed, settled),
        invalid_rate: rate(invalid, settled),
        counted_at: minute(*at),
    }
    .render()?;
    Ok(Html(html).into_response())
}
