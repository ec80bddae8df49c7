//! The SQL of a transactional push (`queue_push`): resolving the ids a partner
//! names, and queueing one delivery per device they reach.
//!
//! Every statement is driven from the request's list of ids, probing one index
//! per id: its cost is the ids it names, never the app's size. `CROSS JOIN`
//! keeps the list as the outer loop on SQLite, whose planner cannot estimate a
//! `json_each` and chose to scan the app's users under it (102 s for 1,000 ids
//! at 100,000 users); Postgres plans `CROSS JOIN … WHERE` like an inner join.
//! `rows` is the backend's JSON row source (`json_each` or `jsonb_to_recordset`).

/// The columns of the ids a push names, in the order they were given.
pub const PUSH_ID_COLUMNS: &[(&str, &str)] = &[
    ("ord", "bigint"),
    ("kind", "text"),
    ("ext", "text"),
    ("phone", "text"),
];

/// `(ord, user_id, device_id)` for every id that names someone: users by
/// external id, else (digits only, `phone` set) by phone; installs by install id.
/// Binds: `$1` app, `$2` the ids (rows of [`PUSH_ID_COLUMNS`]).
pub fn resolve_sql(rows: impl Fn(&str, &[(&str, &str)]) -> String) -> String {
    let ids = rows("$2", PUSH_ID_COLUMNS);
    format!(
        "SELECT x.ord, u.id AS user_id, CAST(NULL AS BIGINT) AS device_id \
         FROM {ids} CROSS JOIN users u \
         WHERE x.kind = 'user' AND u.app_id = $1 AND u.external_id = x.ext \
         UNION ALL \
         SELECT x.ord, u.id, CAST(NULL AS BIGINT) \
         FROM {ids} CROSS JOIN users u \
         WHERE x.kind = 'user' AND x.phone IS NOT NULL AND u.app_id = $1 AND u.phone = x.phone \
           AND NOT EXISTS (SELECT 1 FROM users e WHERE e.app_id = $1 AND e.external_id = x.ext) \
         UNION ALL \
         SELECT x.ord, CAST(NULL AS BIGINT), v.id \
         FROM {ids} CROSS JOIN devices v \
         WHERE x.kind = 'install' AND v.app_id = $1 AND v.install_id = x.ext"
    )
}

/// Queues one delivery per active device of the resolved users (their primary,
/// or most recent, device alone when `primary_only`) and per resolved install,
/// a device named both ways once (`UNION`). The ids drive the join: under
/// `v.id IN (…)` SQLite read the app's active devices through the zone index
/// instead. With a topic, a user must take it.
/// Binds: `$1` app, `$2` request, `$3` priority, `$4` now, `$5` user ids and
/// `$6` device ids (rows of `id`), `$7` topic, `$8` its default. Returns the ids.
pub fn insert_sql(
    rows: impl Fn(&str, &[(&str, &str)]) -> String,
    primary_only: bool,
    topic: bool,
) -> String {
    let one_per_user = if primary_only {
        " AND d.id = (SELECT q.id FROM devices q WHERE q.user_id = d.user_id AND q.state = 'active' \
           ORDER BY q.is_primary DESC, q.updated_at DESC, q.id DESC LIMIT 1)"
    } else {
        ""
    };
    let topic = if topic {
        " AND COALESCE((SELECT s.opted_in FROM subscriptions s \
           WHERE s.user_id = v.user_id AND s.topic = $7), $8)"
    } else {
        " AND $7 IS NULL AND $8 IS NULL"
    };
    format!(
        "INSERT INTO deliveries (app_id, request_id, user_id, device_id, priority, status, attempts, \
           next_attempt_at, created_at, updated_at) \
         SELECT v.app_id, $2, v.user_id, v.id, $3, 'queued', 0, $4, $4, $4 \
         FROM ( \
             SELECT d.id FROM {users} CROSS JOIN devices d \
             WHERE d.user_id = x.id AND d.state = 'active'{one_per_user} \
             UNION \
             SELECT x.id FROM {devices}) AS t \
         CROSS JOIN devices v \
         WHERE v.id = t.id AND v.app_id = $1 AND v.state = 'active'{topic} \
         RETURNING id",
        users = rows("$5", &[("id", "bigint")]),
        devices = rows("$6", &[("id", "bigint")]),
    )
}

/// Users of the push that have no active device: their fallback is due at once.
/// Binds: `$1` app, `$2` request, `$3` now, `$4` user ids (rows of `id`).
pub fn no_device_fallback_sql(rows: impl Fn(&str, &[(&str, &str)]) -> String) -> String {
    format!(
        "INSERT INTO fallbacks (app_id, request_id, user_id, reason, state, attempts, \
           next_attempt_at, created_at, updated_at) \
         SELECT $1, $2, u.id, 'no_active_device', 'pending', 0, $3, $3, $3 \
         FROM {users} CROSS JOIN users u \
         WHERE u.id = x.id \
           AND NOT EXISTS (SELECT 1 FROM devices v WHERE v.user_id = u.id AND v.state = 'active') \
         ON CONFLICT (request_id, user_id) DO NOTHING",
        users = rows("$4", &[("id", "bigint")]),
    )
}

/// One `no_device` message per user of the push with no active device, so the
/// push leaves a trace for them too (and the fallback's outcome a status):
/// `GET /v1/messages?request=…` and the webhook show it like any other message.
/// Binds: `$1` app, `$2` request, `$3` priority, `$4` now, `$5` user ids (rows
/// of `id`). Returns the ids.
pub fn no_device_sql(rows: impl Fn(&str, &[(&str, &str)]) -> String) -> String {
    format!(
        "INSERT INTO deliveries (app_id, request_id, user_id, device_id, priority, status, attempts, \
           created_at, updated_at) \
         SELECT $1, $2, u.id, NULL, $3, 'no_device', 0, $4, $4 \
         FROM {users} CROSS JOIN users u \
         WHERE u.id = x.id \
           AND NOT EXISTS (SELECT 1 FROM devices v WHERE v.user_id = u.id AND v.state = 'active') \
         RETURNING id",
        users = rows("$5", &[("id", "bigint")]),
    )
}
