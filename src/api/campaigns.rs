//! Campaigns over REST. The JSON form is the campaign files' serde model
//! ([`CampaignDefinition`]) with the app taken from the API key; campaigns are
//! addressed by id, and another app's id is not found. Creating, editing and the
//! lifecycle go through the same library functions as `meridian campaign`.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use super::openapi::{BodyRefusals, ErrorBody, KeyRefusals};
use super::{idempotency, page_limit, ApiError, ApiState, AppKey, Body, Path, Query};
use crate::definitions::{self, Action, ApplyError};
use crate::domain::campaign::{from_json, CampaignDefinition, DesiredStatus, ValidationErrors};
use crate::domain::planner::{Disposition, ALL_ZONES};
use crate::domain::state::{CampaignState, SlotState, StateMachine};
use crate::domain::zone::parse_zone;
use crate::store::{CampaignFilter, CampaignRecord, SaveOutcome, Store, StoreError};

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        let conflict = |code, message: String| Self::new(StatusCode::CONFLICT, code, message);
        match e {
            ApplyError::Transition { .. } => conflict("invalid_transition", e.to_string()),
            ApplyError::Exists { .. } => conflict("conflict", e.to_string()),
            ApplyError::Store(StoreError::NotEditable { .. }) => {
                conflict("not_editable", e.to_string())
            }
            // A concurrent change moved the campaign first.
            ApplyError::Store(StoreError::State(s)) => {
                conflict("invalid_transition", s.to_string())
            }
            ApplyError::Store(s) => s.into(),
            ApplyError::Planner(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            ApplyError::Invalid(_)
            | ApplyError::Definition(_)
            | ApplyError::UnknownApp(_)
            | ApplyError::Plan(_) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
        }
    }
}

/// A campaign definition from a request body. The app is the key's: a body may
/// leave it out or name it, but naming another app is refused (never written).
pub fn definition_for(app: &str, mut body: Value) -> Result<CampaignDefinition, ApplyError> {
    if let Value::Object(members) = &mut body {
        match members.get("app") {
            None => {
                members.insert("app".to_owned(), Value::String(app.to_owned()));
            }
            Some(Value::String(named)) if named == app => {}
            Some(_) => {
                return Err(ValidationErrors(vec![crate::domain::campaign::FieldError {
                    field: "app".to_owned(),
                    message: format!("must be {app:?}, the API key's app (or be left out)"),
                }])
                .into())
            }
        }
    }
    from_json(body).map_err(|e| ValidationErrors(vec![e]).into())
}

/// The JSON form of a campaign definition, documented as an open object: a
/// schema derived for the whole campaign model would put utoipa on every type of
/// `campaign.rs`, which `campaign::from_json` already checks with errors naming
/// the field. Its example is a valid definition (a test keeps it so).
pub struct DefinitionSchema;

impl DefinitionSchema {
    /// Members a definition cannot do without.
    pub const REQUIRED: [&'static str; 4] = ["key", "message", "audience", "schedule"];

    pub fn example() -> Value {
        serde_json::json!({
            "key": "morning-digest-2030-12-01",
            "name": "Morning digest",
            "message": {"title": "Good morning", "body": "Today's picks", "ttl": "6h"},
            "audience": {"topics": ["marketing"]},
            "schedule": {"type": "local", "at": "2030-12-01T09:00", "missed": "skip"},
        })
    }
}

impl PartialSchema for DefinitionSchema {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A campaign file's fields in JSON (see `campaigns/*.toml` and the README): \
                 `key`, `name`, `status` (`draft` or `scheduled`), `message` (title, body, \
                 image, buttons, deeplink or url, sound, badge, data, ttl, collapse_key, \
                 priority, variants), `audience` (topics, platforms, locales, attributes, \
                 users, devices), `schedule` (`now`, `at`, `local` with `missed`, `cron` with \
                 `zone` and `until`), `quiet_hours`, `throttle_per_minute`. `app` may be left \
                 out; it is the API key's. A wrong field is a 400 naming it.",
            ));
        let schema = Self::REQUIRED
            .into_iter()
            .fold(schema, |schema, member| schema.required(member));
        schema
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .examples([Self::example()])
            .into()
    }
}

impl ToSchema for DefinitionSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "CampaignDefinition".into()
    }
}

/// A JSON merge patch (RFC 7396) of a definition.
pub struct PatchSchema;

impl PartialSchema for PatchSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A JSON merge patch (RFC 7396) of the campaign's definition: members \
                 replace, `null` removes. `key` and `app` cannot change.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .examples([serde_json::json!({"message": {"title": "New title"}})])
            .into()
    }
}

impl ToSchema for PatchSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "CampaignPatch".into()
    }
}

/// A campaign in a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignSummary {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub state: CampaignState,
    /// Increases with every saved change of the definition.
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

impl From<&CampaignRecord> for CampaignSummary {
    fn from(c: &CampaignRecord) -> Self {
        Self {
            id: c.id,
            key: c.key.clone(),
            name: c.name.clone(),
            state: c.state,
            revision: c.revision,
            created_at: c.created_at,
            updated_at: c.updated_at,
            scheduled_at: c.scheduled_at,
        }
    }
}

/// One campaign: its definition and what it has done so far.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    #[serde(flatten)]
    pub summary: CampaignSummary,
    /// The tz database its slots were planned with.
    pub tzdata_version: Option<String>,
    #[schema(value_type = DefinitionSchema)]
    pub definition: Value,
    /// Deliveries by status.
    pub deliveries: BTreeMap<String, i64>,
    /// Recipients of the slots released so far.
    pub recipients: i64,
    /// Who the released slots left out, by reason (`opted_out`, `segment`, …).
    pub excluded: BTreeMap<String, i64>,
    /// Slots with recipients or no longer pending; the full plan is at `/slots`.
    pub slots: Vec<SlotView>,
    /// Pending slots of zones nobody is in yet (kept for late registrations).
    pub empty_slots: usize,
}

/// Where and when a slot fires, on the UTC clock and on the local one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotTime {
    /// The recipients' zone the slot serves, `*` for everyone at once, `""` for
    /// recipients without a zone (sent in the app's default zone).
    pub zone: String,
    pub occurrence: String,
    pub due_at: DateTime<Utc>,
    /// `due_at` on the wall clock of `localZone`, with its offset.
    pub local_due_at: String,
    pub local_zone: String,
}

/// The zones a campaign's local times are read in besides the slots' own.
#[derive(Debug, Clone, Copy)]
struct LocalZones {
    /// The schedule's named zone (`cron` with `zone`).
    named: Option<Tz>,
    /// The app's default zone.
    default: Tz,
}

impl LocalZones {
    fn of<S>(st: &ApiState<S>, app: &str, named: Option<&str>) -> Self {
        Self {
            named: named.and_then(parse_zone),
            default: st.config.app(app).map_or(chrono_tz::UTC, |a| a.timezone()),
        }
    }

    /// A slot's times. Its local clock is its zone's; for a slot serving every
    /// zone at once, the schedule's named zone if any, the app's default otherwise.
    fn slot(self, zone: String, occurrence: String, due_at: DateTime<Utc>) -> SlotTime {
        let tz = if zone == ALL_ZONES {
            self.named.unwrap_or(self.default)
        } else {
            parse_zone(&zone).unwrap_or(self.default)
        };
        SlotTime {
            zone,
            occurrence,
            due_at,
            local_due_at: due_at
                .with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, false),
            local_zone: tz.name().to_owned(),
        }
    }
}

/// One slot of a campaign's plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    pub id: i64,
    #[serde(flatten)]
    pub time: SlotTime,
    pub state: SlotState,
    pub disposition: String,
    /// Recipients when planned.
    pub planned: i64,
    /// Recipients counted at release (absent before).
    pub recipients: Option<i64>,
    pub excluded: BTreeMap<String, i64>,
    pub deliveries: BTreeMap<String, i64>,
    pub first_sent_at: Option<DateTime<Utc>>,
}

async fn slot_views<S: Store>(
    st: &ApiState<S>,
    c: &CampaignRecord,
) -> Result<Vec<SlotView>, ApiError> {
    let slots = st.store.slot_list(c.id).await?;
    let mut counts: BTreeMap<i64, (Option<i64>, BTreeMap<String, i64>)> = BTreeMap::new();
    for (slot, kind, n) in st.store.slot_count_by_state(c.id).await? {
        let entry = counts.entry(slot).or_default();
        match kind.strip_prefix("excluded:") {
            Some(reason) => {
                entry.1.insert(reason.to_owned(), n);
            }
            None => entry.0 = Some(n),
        }
    }
    let mut deliveries: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for (slot, status, n) in st.store.delivery_count_by_slot(c.id).await? {
        deliveries.entry(slot).or_default().insert(status, n);
    }
    let zones = LocalZones::of(st, &c.app_id, c.definition.0["schedule"]["zone"].as_str());
    Ok(slots
        .into_iter()
        .map(|s| {
            let (recipients, excluded) = counts.remove(&s.id).unwrap_or_default();
            SlotView {
                id: s.id,
                time: zones.slot(s.zone, s.occurrence, s.fire_at),
                state: s.state,
                disposition: s.disposition,
                planned: s.planned_count,
                recipients,
                excluded,
                deliveries: deliveries.remove(&s.id).unwrap_or_default(),
                first_sent_at: s.first_sent_at,
            }
        })
        .collect())
}

async fn view<S: Store>(st: &ApiState<S>, c: CampaignRecord) -> Result<CampaignView, ApiError> {
    let slots = slot_views(st, &c).await?;
    let mut recipients = 0;
    let mut excluded: BTreeMap<String, i64> = BTreeMap::new();
    for s in &slots {
        recipients += s.recipients.unwrap_or(0);
        for (reason, n) in &s.excluded {
            *excluded.entry(reason.clone()).or_default() += n;
        }
    }
    let (shown, empty): (Vec<_>, Vec<_>) = slots
        .into_iter()
        .partition(|s| s.planned > 0 || s.state != SlotState::Pending);
    Ok(CampaignView {
        summary: CampaignSummary::from(&c),
        deliveries: st.store.delivery_count_by_status(c.id).await?,
        tzdata_version: c.tzdata_version,
        definition: c.definition.0,
        recipients,
        excluded,
        slots: shown,
        empty_slots: empty.len(),
    })
}

fn to_json(v: &impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the answer does not serialize: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
struct IdParam {
    id: String,
}

/// The path's `{id}`, as documented (read as [`IdParam`], to name it in a 400).
#[allow(dead_code)] // documentation only
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CampaignId {
    /// The campaign's id.
    id: i64,
}

/// What a route addressing a campaign by `{id}` can answer besides its own answers.
#[derive(IntoResponses)]
pub enum CampaignIdRefusals {
    /// The id is not a number.
    #[response(status = 400)]
    NotANumber(ErrorBody),
    /// No such campaign in this app (or, for an action, no such action).
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The campaign named by the path's `{id}`, found only among the key's app's
/// campaigns: another app's id is not found, and no handler can reach one.
pub struct AppCampaign(pub CampaignRecord);

impl<S: Store> FromRequestParts<ApiState<S>> for AppCampaign {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ApiState<S>,
    ) -> Result<Self, Self::Rejection> {
        let AppKey(app) = AppKey::from_request_parts(parts, st).await?;
        let numeric = || ApiError::field("id", "a campaign is addressed by its numeric id");
        let Path(IdParam { id }) = Path::<IdParam>::from_request_parts(parts, st)
            .await
            .map_err(|_| numeric())?;
        let id: i64 = id.parse().map_err(|_| numeric())?;
        reload(st, &app, id).await.map(Self)
    }
}

async fn reload<S: Store>(
    st: &ApiState<S>,
    app: &str,
    id: i64,
) -> Result<CampaignRecord, ApiError> {
    st.store
        .campaign_get_by_id(app, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))
}

/// `POST /v1/campaigns`: creates a campaign (201). The same key with the same
/// definition answers 200 and changes nothing; with another definition, 409.
/// `Idempotency-Key` is honoured.
#[utoipa::path(
    post,
    path = "/v1/campaigns",
    tag = "campaigns",
    operation_id = "createCampaign",
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "1–255 printable ASCII characters: the same key and request within 24 hours \
                        answers the first answer again (`Idempotent-Replayed: true`)"),
    ),
    request_body = DefinitionSchema,
    responses(
        (status = 201, description = "Created", body = CampaignView),
        (status = 200, description = "The same key with the same definition, which changes nothing, \
                                      or a replayed answer", body = CampaignView),
        (status = 409, description = "The key exists with another definition (`conflict`), or a request \
                                      with this Idempotency-Key is still running", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with another request", body = ErrorBody),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn create<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    let def = definition_for(&app, body)?;
    let fingerprint = idempotency::fingerprint("POST /v1/campaigns", &to_json(&def)?);
    idempotency::once(&st, &app, &headers, &fingerprint, async {
        let applied = definitions::create(&*st.store, &st.config, &def, st.clock.now()).await?;
        let status = match applied.outcome {
            SaveOutcome::Created => StatusCode::CREATED,
            SaveOutcome::Updated | SaveOutcome::Unchanged => StatusCode::OK,
        };
        Ok((status, to_json(&view(&st, applied.record).await?)?))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only campaigns in this state.
    #[param(value_type = Option<CampaignState>)]
    pub state: Option<String>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size, 1–500 (100 when absent).
    pub limit: Option<i64>,
}

/// A page of campaigns, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignSummary>,
    /// The `cursor` of the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A campaign's whole plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotsPage {
    pub campaign_id: i64,
    pub state: CampaignState,
    pub tzdata_version: Option<String>,
    pub slots: Vec<SlotView>,
}

const CURSOR_PREFIX: &str = "before:";

fn encode_cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(CURSOR_PREFIX)?.parse().ok())
        .ok_or_else(|| ApiError::field("cursor", "use the nextCursor of the previous page"))
}

/// `GET /v1/campaigns?state=&cursor=&limit=`: the app's campaigns, newest first;
/// `nextCursor` (opaque) asks for the next page and is null on the last.
#[utoipa::path(
    get,
    path = "/v1/campaigns",
    tag = "campaigns",
    operation_id = "listCampaigns",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the app's campaigns, newest first", body = CampaignPage),
        (status = 400, description = "A parameter is wrong; the message names it", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn list<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    Query(q): Query<ListQuery>,
) -> Result<Json<CampaignPage>, ApiError> {
    let state = match q.state.as_deref() {
        Some(s) => Some(CampaignState::parse(s).map_err(|_| {
            let known: Vec<&str> = CampaignState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::field("state", format!("{s:?} is not one of {}", known.join(", ")))
        })?),
        None => None,
    };
    let before_id = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = page_limit(q.limit)?;
    let page = st
        .store
        .campaign_list_page(
            &app,
            &CampaignFilter {
                state,
                search: None,
                before_id,
                limit,
            },
        )
        .await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|c| encode_cursor(c.id)))
        .flatten();
    Ok(Json(CampaignPage {
        campaigns: page.iter().map(CampaignSummary::from).collect(),
        next_cursor: next,
    }))
}

/// `GET /v1/campaigns/{id}`: a campaign with its counts and slots.
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "getCampaign",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign, its counts and its slots with recipients", body = CampaignView),
        CampaignIdRefusals,
        KeyRefusals,
    )
)]
pub async fn get<S: Store>(
    State(st): State<ApiState<S>>,
    AppCampaign(c): AppCampaign,
) -> Result<Json<CampaignView>, ApiError> {
    Ok(Json(view(&st, c).await?))
}

/// `PATCH /v1/campaigns/{id}`: a JSON merge patch (RFC 7396) of the definition,
/// while the campaign is a draft or scheduled (nothing released); the slots are
/// planned again. Otherwise 409 naming the state.
#[utoipa::path(
    patch,
    path = "/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "editCampaign",
    params(CampaignId),
    request_body(content(
        (PatchSchema = "application/merge-patch+json"),
        (PatchSchema = "application/json"),
    )),
    responses(
        (status = 200, description = "The campaign as edited, planned again", body = CampaignView),
        (status = 404, description = "No such campaign in this app", body = ErrorBody),
        (status = 409, description = "Not a draft or scheduled (`not_editable`)", body = ErrorBody),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn edit<S: Store>(
    State(st): State<ApiState<S>>,
    AppCampaign(c): AppCampaign,
    Body(patch): Body<Value>,
) -> Result<Json<CampaignView>, ApiError> {
    let applied = definitions::edit(&*st.store, &st.config, &c, &patch, st.clock.now()).await?;
    Ok(Json(view(&st, applied.record).await?))
}

/// `POST /v1/campaigns/{id}/schedule|pause|resume|cancel`.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/{action}",
    tag = "campaigns",
    operation_id = "actOnCampaign",
    params(
        CampaignId,
        ("action" = String, Path, description = "What to do",
         pattern = "^(schedule|pause|resume|cancel)$"),
    ),
    responses(
        (status = 200, description = "The campaign after the action", body = CampaignView),
        CampaignIdRefusals,
        (status = 409, description = "The campaign's state does not allow it (`invalid_transition`)", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn act<S: Store>(
    State(st): State<ApiState<S>>,
    AppCampaign(c): AppCampaign,
    Path((_, action)): Path<(String, String)>,
) -> Result<Json<CampaignView>, ApiError> {
    let action = Action::parse(&action)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))?;
    definitions::act(&*st.store, &st.config, &c, action, st.clock.now()).await?;
    Ok(Json(view(&st, reload(&st, &c.app_id, c.id).await?).await?))
}

/// `GET /v1/campaigns/{id}/slots`: the whole plan, empty zones included.
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}/slots",
    tag = "campaigns",
    operation_id = "campaignSlots",
    params(CampaignId),
    responses(
        (status = 200, description = "Every slot: due time in UTC and local, state, counts", body = SlotsPage),
        CampaignIdRefusals,
        KeyRefusals,
    )
)]
pub async fn slots<S: Store>(
    State(st): State<ApiState<S>>,
    AppCampaign(c): AppCampaign,
) -> Result<Json<SlotsPage>, ApiError> {
    let slots = slot_views(&st, &c).await?;
    Ok(Json(SlotsPage {
        campaign_id: c.id,
        state: c.state,
        tzdata_version: c.tzdata_version,
        slots,
    }))
}

/// A slot as the planner would make it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedSlotView {
    #[serde(flatten)]
    pub time: SlotTime,
    pub disposition: &'static str,
    pub recipients: u64,
}

/// What scheduling a definition now would plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub key: String,
    pub tzdata_version: &'static str,
    /// Everyone the audience has now.
    pub recipients: u64,
    /// Recipients with no known zone, planned in the app's default zone.
    pub defaulted_recipients: u64,
    pub recipients_by_disposition: BTreeMap<&'static str, u64>,
    /// When the first and the last slot with recipients fire (not skipped;
    /// empty zones' slots fire too, sending nothing).
    pub first_due_at: Option<DateTime<Utc>>,
    pub last_due_at: Option<DateTime<Utc>>,
    /// Slots with recipients, skipped ones included.
    pub slots: Vec<PlannedSlotView>,
    /// Slots planned for zones nobody is in yet.
    pub empty_slots: usize,
}

/// `POST /v1/campaigns:preview`: validates a definition and plans it as if
/// scheduled now, against the audience as it is; writes nothing.
#[utoipa::path(
    post,
    path = "/v1/campaigns:preview",
    tag = "campaigns",
    operation_id = "previewCampaign",
    request_body = DefinitionSchema,
    responses(
        (status = 200, description = "The plan and audience counts if scheduled now; nothing is saved", body = Preview),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn preview<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    Body(body): Body<Value>,
) -> Result<Json<Preview>, ApiError> {
    let mut def = definition_for(&app, body)?;
    def.status = DesiredStatus::Scheduled;
    let prepared = definitions::prepare(&*st.store, &st.config, &def, st.clock.now()).await?;
    let Some(plan) = prepared.plan else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a scheduled definition was not planned",
        ));
    };
    let zones = LocalZones::of(&st, &app, def.schedule.zone.as_deref());
    let (shown, empty): (Vec<_>, Vec<_>) = plan.slots.iter().partition(|s| s.recipients > 0);
    let sending = || {
        shown
            .iter()
            .filter(|s| s.disposition != Disposition::Skipped)
            .map(|s| s.fire_at)
    };
    Ok(Json(Preview {
        key: def.key,
        tzdata_version: plan.tzdata_version,
        recipients: plan.slots.iter().map(|s| s.recipients).sum(),
        defaulted_recipients: plan.defaulted_recipients,
        recipients_by_disposition: plan
            .recipients_by_disposition()
            .into_iter()
            .map(|(d, n)| (d.as_str(), n))
            .collect(),
        first_due_at: sending().min(),
        last_due_at: sending().max(),
        slots: shown
            .into_iter()
            .map(|s| PlannedSlotView {
                time: zones.slot(s.zone.clone(), s.occurrence.clone(), s.fire_at),
                disposition: s.disposition.as_str(),
                recipients: s.recipients,
            })
            .collect(),
        empty_slots: empty.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Ok(42));
        for bad in [
            "42",
            "",
            "!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("after:1"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_example_is_a_valid_definition_and_its_required_members_are() {
        let example = DefinitionSchema::example();
        assert!(definition_for("shop", example.clone()).is_ok());
        for member in DefinitionSchema::REQUIRED {
            let mut without = example.clone();
            without.as_object_mut().map(|m| m.remove(member));
            let refused = definition_for("shop", without).map_err(|e| e.to_string());
            assert!(
                matches!(&refused, Err(m) if m.contains(member)),
                "{member}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_app_comes_from_the_key() {
        let mut body = serde_json::json!({"key": "k", "message": {"title": "t", "body": "b"},
                                          "audience": {}, "schedule": {"type": "now"}});
        let app = |body: &Value| definition_for("shop", body.clone()).map(|d| d.app);
        assert_eq!(app(&body).ok().as_deref(), Some("shop"));
        body["app"] = "shop".into();
        assert_eq!(app(&body).ok().as_deref(), Some("shop"));
        body["app"] = "other".into();
        let refused = app(&body).map_err(|e| e.to_string());
        assert!(
            matches!(&refused, Err(m) if m.starts_with("app: ")),
            "{refused:?}"
        );
    }
}
