//! Turns an audience into SQL that yields its recipients. Pure string building:
//! the only dialect differences are JSON access and list parameters.

use chrono::{DateTime, Utc};

use crate::domain::campaign::{scalar_text, Audience, DevicePolicy, FilterOp};
use std::marker::PhantomData;

use super::dialect::Dialect;
use crate::config::FrequencyCap;

/// A parameter of the generated SQL, bound in order as `$1, $2, …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
    /// A list of strings: a `text[]` on Postgres, a JSON array on SQLite.
    TextList(Vec<String>),
    Time(DateTime<Utc>),
}

/// A topic the audience requires, with what "no explicit choice" means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRule<'a> {
    pub name: &'a str,
    pub default_subscribed: bool,
    pub cap: Option<FrequencyCap>,
}

/// Who a campaign or push targets within one app.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    pub app_id: &'a str,
    pub audience: &'a Audience,
    pub topics: Vec<TopicRule<'a>>,
}

struct Builder<D> {
    dialect: PhantomData<D>,
    binds: Vec<Bind>,
}

impl<D: Dialect> Builder<D> {
    fn param(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    fn text(&mut self, s: impl Into<String>) -> String {
        self.param(Bind::Text(s.into()))
    }

    /// `expr` is one of the strings in `items`.
    fn in_list(&mut self, expr: &str, items: Vec<String>) -> String {
        let p = self.param(Bind::TextList(items));
        D::text_in(expr, &p)
    }

    /// A user attribute as text (`NULL` when absent), compared the same way on both backends.
    fn attribute(&mut self, name: &str) -> String {
        let p = self.text(D::attribute_param(name));
        D::attribute(&p)
    }
}

/// SQL selecting the segment's recipients as `(device_id, user_id, zone, token,
/// platform, locale)`, where `zone` is the device's zone, else the user's, else `''`.
/// With `zone = Some(z)` only the recipients in that zone.
pub fn recipients_sql<D: Dialect>(
    segment: &Segment<'_>,
    zone: Option<&str>,
) -> (String, Vec<Bind>) {
    recipients_in_range_sql::<D>(segment, zone, None)
}

/// Which recipients' zones a query takes.
#[derive(Debug, Clone, Copy)]
pub enum Zones<'a> {
    Any,
    One(&'a str),
    Among(&'a [String]),
}

impl<'a> From<Option<&'a str>> for Zones<'a> {
    fn from(zone: Option<&'a str>) -> Self {
        zone.map_or(Self::Any, Self::One)
    }
}

impl<D: Dialect> Builder<D> {
    /// ` AND <column> …` restricting to `zones`, or nothing.
    fn zone_cond(&mut self, column: &str, zones: Zones<'_>) -> String {
        match zones {
            Zones::Any => String::new(),
            Zones::One(z) => format!(" AND {column} = {}", self.text(z)),
            Zones::Among(list) => format!(" AND {}", self.in_list(column, list.to_vec())),
        }
    }
}

/// As [`recipients_sql`], limited to device ids in `range` (inclusive).
pub fn recipients_in_range_sql<D: Dialect>(
    segment: &Segment<'_>,
    zone: Option<&str>,
    range: Option<(i64, i64)>,
) -> (String, Vec<Bind>) {
    recipients_where_sql::<D>(segment, zone.into(), range)
}

/// The conditions of a segment, split by what they read, as SQL over `d` (the
/// device), `u` (its user, when `users` joins it) and `c` (the device row with its
/// `locale_tag`).
struct Conditions {
    /// The user takes every topic of the segment.
    topics: Vec<String>,
    /// The explicit user list (it narrows what is counted, too).
    listed: Vec<String>,
    /// Attributes and the primary-device policy: conditions on the user's row.
    rest: Vec<String>,
    /// Platform and locale: conditions on `c`.
    device: Vec<String>,
    users: &'static str,
}

fn conditions<D: Dialect>(b: &mut Builder<D>, segment: &Segment<'_>, app: &str) -> Conditions {
    let audience = segment.audience;
    // Conditions on the user keep or drop all of a user's devices together,
    // so they apply before the primary device is chosen.
    let topics = topic_conds(b, &segment.topics);
    let mut rest = Vec::new();
    for f in &audience.attributes {
        let expr = b.attribute(&f.attribute);
        let cond = match (f.op, &f.value) {
            (FilterOp::Exists, _) => format!("{expr} IS NOT NULL"),
            (FilterOp::NotExists, _) => format!("{expr} IS NULL"),
            (FilterOp::Eq, Some(v)) => format!("{expr} = {}", b.text(scalar_text(v))),
            (FilterOp::Ne, Some(v)) => {
                let p = b.text(scalar_text(v));
                format!("({expr} IS NULL OR {expr} <> {p})")
            }
            (FilterOp::In, Some(serde_json::Value::Array(items))) => {
                b.in_list(&expr, items.iter().map(scalar_text).collect())
            }
            // Validation rejects these shapes; match nothing rather than everything.
            _ => "FALSE".to_owned(),
        };
        rest.push(cond);
    }
    let mut listed = Vec::new();
    if !audience.users.is_empty() {
        listed.push(format!("u.app_id = {app}"));
        listed.push(b.in_list("u.external_id", audience.users.clone()));
        listed.push("d.user_id IS NOT NULL".to_owned());
    } else if !audience.attributes.is_empty() {
        // A device without a user has no attributes: left out by the segment, and
        // still counted among the zone's devices.
        rest.push("d.user_id IS NOT NULL".to_owned());
    }
    let mut device = Vec::new();
    if !audience.platforms.is_empty() {
        let list = audience
            .platforms
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        device.push(b.in_list("c.platform", list));
    }
    if !audience.locales.is_empty() {
        let mut alts = Vec::new();
        for l in &audience.locales {
            let tag = l.replace('_', "-").to_ascii_lowercase();
            let exact = b.text(tag.clone());
            let prefix = b.text(format!("{tag}-%"));
            alts.push(format!(
                "c.locale_tag = {exact} OR c.locale_tag LIKE {prefix}"
            ));
        }
        device.push(format!("({})", alts.join(" OR ")));
    }
    // The primary device is the one no other active device of the user outranks
    // (flagged primary first, then the most recently registered). A condition on
    // the row, not a window over all devices, so the zone range stays an index scan.
    if audience.devices == DevicePolicy::Primary {
        rest.push(
            "NOT EXISTS (SELECT 1 FROM devices d2 WHERE d2.user_id = d.user_id AND d2.state = 'active' \
             AND d2.id <> d.id AND (d2.is_primary, d2.created_at, d2.id) > (d.is_primary, d.created_at, d.id))"
                .to_owned(),
        );
    }
    // The user row is read only when a condition needs it: at a few index probes per
    // recipient, every join left out counts.
    // An explicit list of users is an inner join, so the query can start from the
    // users' (app_id, external_id) index instead of scanning the app's devices.
    let users = if !audience.users.is_empty() {
        " JOIN users u ON u.id = d.user_id"
    } else if !audience.attributes.is_empty() {
        " LEFT JOIN users u ON u.id = d.user_id"
    } else {
        ""
    };
    Conditions {
        topics,
        listed,
        rest,
        device,
        users,
    }
}

/// `cond AND cond …` as one SQL condition (`TRUE` for none).
fn all_of(conds: &[String]) -> String {
    if conds.is_empty() {
        "TRUE".to_owned()
    } else {
        conds.join(" AND ")
    }
}

/// The recipients in `zones`, limited to device ids in `range` (inclusive).
pub fn recipients_where_sql<D: Dialect>(
    segment: &Segment<'_>,
    zones: Zones<'_>,
    range: Option<(i64, i64)>,
) -> (String, Vec<Bind>) {
    let (b, app, c, zone_cond) = devices_in::<D>(segment, zones, range);
    let user_where: String = c
        .topics
        .iter()
        .chain(&c.rest)
        .chain(&c.listed)
        .map(|x| format!(" AND {x}"))
        .collect();
    let device_where = if c.device.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", c.device.join(" AND "))
    };
    let users = c.users;
    let sql = format!(
        "SELECT c.device_id, c.user_id, c.zone, c.token, c.platform, c.locale FROM (\
         SELECT d.id AS device_id, d.user_id, d.platform, d.token, d.lang AS locale, \
         lower(replace(d.lang, '_', '-')) AS locale_tag, \
         d.zone \
         FROM devices d{users} \
         WHERE d.app_id = {app} AND d.state = 'active'{zone_cond}{user_where}) c{device_where}"
    );
    (sql, b.binds)
}

/// The start of a query over the app's devices `d`: the builder, the app's
/// placeholder, the segment's conditions, and ` AND …` restricting `d` to `zones`
/// and ids in `range`. The zone is a condition on the device row itself, so each
/// slot's audience is a range of the (app_id, zone, id) index.
fn devices_in<D: Dialect>(
    segment: &Segment<'_>,
    zones: Zones<'_>,
    range: Option<(i64, i64)>,
) -> (Builder<D>, String, Conditions, String) {
    let mut b: Builder<D> = Builder {
        dialect: PhantomData,
        binds: Vec::new(),
    };
    let app = b.text(segment.app_id);
    let c = conditions(&mut b, segment, &app);
    let mut cond = b.zone_cond("d.zone", zones);
    if let Some((lo, hi)) = range {
        let lo = b.param(Bind::Int(lo));
        let hi = b.param(Bind::Int(hi));
        cond.push_str(&format!(" AND d.id BETWEEN {lo} AND {hi}"));
    }
    (b, app, c, cond)
}

/// One pass over the active devices in `zones` for a release (the explicit user
/// list applied): rows `(device_id, zone, takes, recipient)`, where `takes` is 1
/// when the device's user takes every topic of the segment (else 0) and
/// `recipient` is 1 when the device is one of the segment's recipients. One probe
/// of the user's subscriptions per device gives the chunks, the recipients and
/// the opted-out counts of every zone at once.
pub fn release_scan_sql<D: Dialect>(
    segment: &Segment<'_>,
    zones: Zones<'_>,
) -> (String, Vec<Bind>) {
    let (b, app, c, zone_cond) = devices_in::<D>(segment, zones, None);
    let listed: String = c.listed.iter().map(|x| format!(" AND {x}")).collect();
    let takes = all_of(&c.topics);
    let rest = all_of(&c.rest);
    let device = all_of(&c.device);
    let users = c.users;
    // Kept from being flattened into the queries around it, which would copy the
    // `takes` probe into every expression that reads it (three probes per device).
    let fence = D::FENCE;
    let sql = format!(
        "SELECT c.device_id, c.zone, c.takes, \
         CASE WHEN c.takes = 1 AND c.rest = 1 AND {device} THEN 1 ELSE 0 END AS recipient FROM (\
         SELECT d.id AS device_id, d.zone, d.platform, lower(replace(d.lang, '_', '-')) AS locale_tag, \
         CASE WHEN {takes} THEN 1 ELSE 0 END AS takes, CASE WHEN {rest} THEN 1 ELSE 0 END AS rest \
         FROM devices d{users} \
         WHERE d.app_id = {app} AND d.state = 'active'{zone_cond}{listed}{fence}) c"
    );
    (sql, b.binds)
}

/// Whether the device's user (`d.user_id`) takes each topic: opted in, or not
/// opted out of a topic users have by default.
fn topic_conds<D: Dialect>(b: &mut Builder<D>, topics: &[TopicRule<'_>]) -> Vec<String> {
    topics
        .iter()
        .map(|t| {
            let p = b.text(t.name);
            if t.default_subscribed {
                format!("NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = d.user_id AND s.topic = {p} AND NOT s.opted_in)")
            } else {
                format!("EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = d.user_id AND s.topic = {p} AND s.opted_in)")
            }
        })
        .collect()
}

/// ` AND …` keeping the devices of an audience's explicit user list, or nothing:
/// such an audience is counted against the users it names, not the whole app.
fn listed_devices<D: Dialect>(b: &mut Builder<D>, segment: &Segment<'_>) -> String {
    if segment.audience.users.is_empty() {
        return String::new();
    }
    let app = b.text(segment.app_id);
    let listed = b.in_list("l.external_id", segment.audience.users.clone());
    format!(" AND d.user_id IN (SELECT l.id FROM users l WHERE l.app_id = {app} AND {listed})")
}

/// SQL counting, per zone in `zones`, the app's invalid devices and its users
/// without an active device (a user with no zone is in zone `''`); the active
/// devices are counted by [`release_scan_sql`]. Rows `(zone, kind, n)` with kind
/// `invalid_token` or `no_device`.
pub fn zone_population_sql<D: Dialect>(
    segment: &Segment<'_>,
    zones: Zones<'_>,
) -> (String, Vec<Bind>) {
    let mut b: Builder<D> = Builder {
        dialect: PhantomData,
        binds: Vec::new(),
    };
    let app = b.text(segment.app_id);
    let mut devices = b.zone_cond("d.zone", zones);
    devices.push_str(&listed_devices(&mut b, segment));
    let mut users = match zones {
        Zones::Any => String::new(),
        Zones::One("") => " AND u.timezone IS NULL".to_owned(),
        Zones::One(z) => format!(" AND u.timezone = {}", b.text(z)),
        Zones::Among(list) => {
            let named = b.in_list("u.timezone", list.to_vec());
            if list.iter().any(String::is_empty) {
                format!(" AND ({named} OR u.timezone IS NULL)")
            } else {
                format!(" AND {named}")
            }
        }
    };
    if !segment.audience.users.is_empty() {
        users.push_str(&format!(
            " AND {}",
            b.in_list("u.external_id", segment.audience.users.clone())
        ));
    }
    // Each part reads only the batch's zones through its own index (the invalid
    // devices by zone, users by zone, then one probe of the user's devices), so a
    // release batch costs its zones' population, not the app's.
    let no_device = D::NO_ACTIVE_DEVICE;
    (
        format!(
            "SELECT d.zone, 'invalid_token', COUNT(*) FROM devices d \
             WHERE d.app_id = {app} AND d.state = 'invalid'{devices} GROUP BY d.zone \
             UNION ALL \
             SELECT COALESCE(u.timezone, ''), 'no_device', COUNT(*) FROM users u {no_device} u.app_id = {app}{users} \
             GROUP BY COALESCE(u.timezone, '')"
        ),
        b.binds,
    )
}

/// A SQL expression naming the first frequency cap `user` (a user id column) has
/// reached at `now` — `'capped:<topic>'` — or NULL. A cap counts the user's pushes
/// of that topic accepted within the window: one per campaign occurrence however
/// many devices it reached, the occurrence being sent (`campaign`, `occurrence`,
/// already bound) excluded, so all of a user's devices go or none does. The
/// user's deliveries are found through every device they have had
/// (`device_users`, then `deliveries_by_device`): the send path writes no index
/// keyed by user.
/// `None` when no topic of the segment has a cap. New binds are appended to `binds`.
pub fn capped_sql<D: Dialect>(
    segment: &Segment<'_>,
    binds: &mut Vec<Bind>,
    user: &str,
    campaign: &str,
    occurrence: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let mut b: Builder<D> = Builder {
        dialect: PhantomData,
        binds: std::mem::take(binds),
    };
    let mut arms = Vec::new();
    for t in &segment.topics {
        let Some(cap) = t.cap else { continue };
        let window = chrono::TimeDelta::from_std(cap.per).unwrap_or(chrono::TimeDelta::MAX);
        let since = b.param(Bind::Time(
            now.checked_sub_signed(window)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        ));
        let max = b.param(Bind::Int(i64::from(cap.max)));
        let topic = b.text(t.name);
        let has_topic = D::has_topic(&topic);
        let reason = b.text(format!("capped:{}", t.name));
        arms.push(format!(
            "WHEN (SELECT COUNT(*) FROM (SELECT DISTINCT x.campaign_id, x.occurrence FROM deliveries x \
             JOIN campaigns k ON k.id = x.campaign_id \
             WHERE x.device_id IN (SELECT du.device_id FROM device_users du WHERE du.user_id = {user}) \
             AND x.user_id = {user} AND x.sent_at > {since} \
             AND NOT (x.campaign_id = {campaign} AND x.occurrence = {occurrence}) AND {has_topic}) p) >= {max} \
             THEN {reason}"
        ));
    }
    *binds = b.binds;
    (!arms.is_empty()).then(|| {
        format!(
            "CASE WHEN {user} IS NULL THEN NULL {} ELSE NULL END",
            arms.join(" ")
        )
    })
}

/// SQL counting the segment's recipients per zone: `(zone, recipients)`.
pub fn zone_counts_sql<D: Dialect>(segment: &Segment<'_>) -> (String, Vec<Bind>) {
    let (inner, binds) = recipients_sql::<D>(segment, None);
    (
        format!("SELECT r.zone, COUNT(*) AS recipients FROM ({inner}) r GROUP BY r.zone ORDER BY r.zone"),
        binds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::campaign::{AttributeFilter, Platform};

    #[test]
    fn binds_follow_placeholders_in_order() {
        let audience = Audience {
            platforms: vec![Platform::Ios],
            attributes: vec![AttributeFilter {
                attribute: "plan".into(),
                op: FilterOp::Eq,
                value: Some(serde_json::json!("gold")),
            }],
            devices: DevicePolicy::Primary,
            ..Audience::default()
        };
        let seg = Segment {
            app_id: "shop",
            audience: &audience,
            topics: vec![TopicRule {
                name: "marketing",
                default_subscribed: false,
                cap: None,
            }],
        };
        let (sql, binds) = recipients_sql::<crate::store::PgDialect>(&seg, Some("Asia/Tokyo"));
        for i in 1..=binds.len() {
            assert!(sql.contains(&format!("${i}")), "missing ${i} in {sql}");
        }
        assert!(!sql.contains(&format!("${}", binds.len() + 1)));
        assert_eq!(binds[0], Bind::Text("shop".into()));
        assert_eq!(binds.last(), Some(&Bind::Text("Asia/Tokyo".into())));
        assert!(sql.contains("d2.is_primary"));
    }
}
