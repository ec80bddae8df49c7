//! Users, devices and subscriptions.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::formats::{self, ExternalId, IanaZone, LanguageTag};

use super::limits::ClientCall;
use super::openapi::{BodyRefusals, ErrorBody, KeyRefusals};
use super::{AnyKey, ApiError, ApiState, AppKey, Body, Path, Peer};
use crate::domain::audience::{
    check_external_id, check_locale, check_token, check_zone, CheckedUser, UserBody,
};
use crate::domain::campaign::Platform;
use crate::store::{DeviceUpsert, Store, UserUpsert};

/// A user as stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub external_id: String,
    /// In E.164.
    pub phone: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

/// A device to register; it needs a `userId` or an `installId`. Its schema is
/// written out below: the token's format depends on the platform.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceBody {
    pub platform: Platform,
    /// APNs: 64 or more hex digits; FCM: 1–4096 printable characters.
    pub token: String,
    /// The user's external id.
    pub user_id: Option<String>,
    /// An anonymous install's id.
    pub install_id: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    /// The user's one device for `devices: primary` pushes.
    #[serde(default)]
    pub primary: bool,
}

impl PartialSchema for DeviceBody {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A device to register; it needs a `userId` or an `installId`, and only a \
                 user's device can be `primary`.",
            ))
            .property("platform", Ref::from_schema_name(Platform::name()))
            .required("platform")
            .property(
                "token",
                string().description(Some(
                    "APNs: 64 to 200 hex digits (an even count); FCM: 1–4096 printable \
                     characters without spaces.",
                )),
            )
            .required("token")
            .property("userId", formats::nullable::<ExternalId>())
            .property("installId", formats::nullable::<ExternalId>())
            .property("timezone", formats::nullable::<IanaZone>())
            .property("locale", formats::nullable::<LanguageTag>())
            .property(
                "primary",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("The user's one device for `devices: primary` pushes.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let token_of = |platform: Platform, pattern: &str| {
            ObjectBuilder::new()
                .property("platform", string().enum_values(Some([platform.as_str()])))
                .property("token", string().pattern(Some(pattern)))
        };
        let has = |member: &str| {
            ObjectBuilder::new()
                .required(member)
                .property(member, string())
        };
        AllOfBuilder::new()
            .item(fields)
            .item(
                OneOfBuilder::new()
                    .item(token_of(Platform::Ios, formats::APNS_TOKEN))
                    .item(token_of(Platform::Android, formats::FCM_TOKEN)),
            )
            .item(
                AnyOfBuilder::new()
                    .item(has("userId"))
                    .item(has("installId")),
            )
            .item(
                AnyOfBuilder::new()
                    .item(
                        ObjectBuilder::new().property(
                            "primary",
                            ObjectBuilder::new()
                                .schema_type(Type::Boolean)
                                .enum_values(Some([false])),
                        ),
                    )
                    .item(has("userId")),
            )
            .into()
    }
}

impl ToSchema for DeviceBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Platform::name().into_owned(), Platform::schema()));
        schemas.push((ExternalId::name().into_owned(), ExternalId::schema()));
        schemas.push((IanaZone::name().into_owned(), IanaZone::schema()));
        schemas.push((LanguageTag::name().into_owned(), LanguageTag::schema()));
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub token: String,
    pub platform: String,
    /// `active`, or `invalid` once a provider refused the token or the app unregistered it.
    pub state: String,
    pub primary: bool,
    pub install_id: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

/// `PUT /v1/users/{external_id}`: creates or updates a user; absent fields keep
/// what is stored. `installIds` attaches those anonymous installs' devices to
/// the user (as a client key with an identity proof would).
#[utoipa::path(
    put,
    path = "/v1/users/{external_id}",
    tag = "audience",
    operation_id = "putUser",
    params(("external_id" = String, Path, description = "The app's id of the user, 1–256 characters")),
    request_body = UserBody,
    responses(
        (status = 200, description = "The user as stored", body = UserView),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn put_user<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    Path(external_id): Path<String>,
    Body(body): Body<UserBody>,
) -> Result<Json<UserView>, ApiError> {
    let user = CheckedUser::check("externalId", external_id, body)?;
    let user_id = st
        .store
        .user_upsert(&UserUpsert::checked(&app, &user), st.clock.now())
        .await?;
    if !user.install_ids.is_empty() {
        let pairs: Vec<(&str, &str)> = user
            .install_ids
            .iter()
            .map(|i| (user.external_id.as_str(), i.as_str()))
            .collect();
        st.store
            .device_attach_installs(&app, &pairs, st.clock.now())
            .await?;
        let max = st.config.apps[&app].max_devices_per_user;
        st.store
            .device_trim_for_user(user_id, max, st.clock.now())
            .await?;
    }
    Ok(Json(UserView {
        external_id: user.external_id,
        phone: user.phone,
        timezone: user.timezone,
        locale: user.locale,
    }))
}

/// `POST /v1/devices`: registers or refreshes a device; a token that was invalid
/// becomes active again.
#[utoipa::path(
    post,
    path = "/v1/devices",
    tag = "audience",
    operation_id = "postDevice",
    request_body = DeviceBody,
    responses(
        (status = 200, description = "The device as stored", body = DeviceView),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn post_device<S: Store>(
    State(st): State<ApiState<S>>,
    key: AnyKey,
    peer: Peer,
    headers: axum::http::HeaderMap,
    Body(body): Body<DeviceBody>,
) -> Result<impl IntoResponse, ApiError> {
    key.admit(&st, ClientCall::Registration, peer)?;
    let app = key.app.clone();
    check_token(body.platform, &body.token)?;
    check_zone(body.timezone.as_deref())?;
    check_locale(body.locale.as_deref())?;
    if body.user_id.is_none() && body.install_id.is_none() {
        return Err(ApiError::field(
            "userId",
            "a userId or an installId is required",
        ));
    }
    if let Some(u) = &body.user_id {
        check_external_id("userId", u)?;
    }
    if let Some(i) = &body.install_id {
        check_external_id("installId", i)?;
    }
    if body.primary && body.user_id.is_none() {
        return Err(ApiError::field(
            "primary",
            "only a user's device can be primary",
        ));
    }
    if let Some(user) = &body.user_id {
        key.act_for(&st, &headers, user)?;
    }
    let record = st
        .store
        .device_upsert(
            &DeviceUpsert {
                app_id: &app,
                user_external_id: body.user_id.as_deref(),
                install_id: body.install_id.as_deref(),
                platform: body.platform,
                token: &body.token,
                timezone: body.timezone.as_deref(),
                locale: body.locale.as_deref(),
                primary: body.primary,
            },
            st.clock.now(),
        )
        .await?;
    if let Some(user_id) = record.user_id {
        let max = st.config.apps[&app].max_devices_per_user;
        let replaced = st
            .store
            .device_trim_for_user(user_id, max, st.clock.now())
            .await?;
        if !replaced.is_empty() {
            tracing::info!(message = "Devices past the user's limit deactivated.", app = %app, count = replaced.len());
        }
    }
    Ok(Json(DeviceView {
        token: record.token,
        platform: record.platform.as_str().to_owned(),
        state: record.state.to_string(),
        primary: record.is_primary,
        install_id: record.install_id,
        timezone: record.timezone,
        locale: record.locale,
    }))
}

/// `DELETE /v1/devices/{token}`: the app unregistered the device. The row stays,
/// invalid, so the message history that names it stays whole.
#[utoipa::path(
    delete,
    path = "/v1/devices/{token}",
    tag = "audience",
    operation_id = "deleteDevice",
    params(("token" = String, Path, description = "The device's token")),
    responses(
        (status = 204, description = "Unregistered"),
        (status = 404, description = "No such device in this app", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn delete_device<S: Store>(
    State(st): State<ApiState<S>>,
    key: AnyKey,
    peer: Peer,
    Path(token): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // A client key names the token it holds: holding it is the proof.
    key.admit(&st, ClientCall::Registration, peer)?;
    let app = key.app;
    let device = st
        .store
        .device_get_by_token(&app, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    st.store
        .device_invalidate(device.id, "unregistered", st.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/users/{external_id}/subscriptions`: `{ "topic": true|false, … }`.
#[utoipa::path(
    put,
    path = "/v1/users/{external_id}/subscriptions",
    tag = "audience",
    operation_id = "putSubscriptions",
    params(("external_id" = String, Path, description = "The user's external id")),
    request_body(content = BTreeMap<String, bool>, description = "Topic names of the app, each with whether the user wants it"),
    responses(
        (status = 200, description = "Every topic of the app with the user's choice or its default", body = BTreeMap<String, bool>),
        (status = 404, description = "No such user", body = ErrorBody),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn put_subscriptions<S: Store>(
    State(st): State<ApiState<S>>,
    key: AnyKey,
    peer: Peer,
    headers: axum::http::HeaderMap,
    Path(external_id): Path<String>,
    Body(body): Body<BTreeMap<String, bool>>,
) -> Result<impl IntoResponse, ApiError> {
    key.admit(&st, ClientCall::Registration, peer)?;
    key.act_for(&st, &headers, &external_id)?;
    let app = key.app;
    let topics = &st.config.apps[&app].topics;
    if let Some(unknown) = body.keys().find(|t| !topics.contains_key(*t)) {
        let known: Vec<&str> = topics.keys().map(String::as_str).collect();
        return Err(ApiError::field(
            unknown,
            format!("unknown topic; this app's topics are {known:?}"),
        ));
    }
    let choices: Vec<(&str, bool)> = body.iter().map(|(t, v)| (t.as_str(), *v)).collect();
    st.store
        .subscription_set(&app, &external_id, &choices, st.clock.now())
        .await?;
    effective_subscriptions(&st, &app, &external_id).await
}

/// `GET /v1/users/{external_id}/subscriptions`: every topic of the app with the
/// user's choice, or the topic's default where the user made none.
#[utoipa::path(
    get,
    path = "/v1/users/{external_id}/subscriptions",
    tag = "audience",
    operation_id = "getSubscriptions",
    params(("external_id" = String, Path, description = "The user's external id")),
    responses(
        (status = 200, description = "Every topic of the app with the user's choice or its default", body = BTreeMap<String, bool>),
        (status = 404, description = "No such user", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn get_subscriptions<S: Store>(
    State(st): State<ApiState<S>>,
    key: AnyKey,
    peer: Peer,
    headers: axum::http::HeaderMap,
    Path(external_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    key.admit(&st, ClientCall::Registration, peer)?;
    key.act_for(&st, &headers, &external_id)?;
    effective_subscriptions(&st, &key.app, &external_id).await
}

async fn effective_subscriptions<S: Store>(
    st: &ApiState<S>,
    app: &str,
    external_id: &str,
) -> Result<Json<BTreeMap<String, bool>>, ApiError> {
    let chosen: BTreeMap<String, bool> = st
        .store
        .subscription_list(app, external_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {external_id:?}")))?
        .into_iter()
        .collect();
    Ok(Json(
        st.config.apps[app]
            .topics
            .iter()
            .map(|(t, c)| {
                (
                    t.clone(),
                    chosen.get(t).copied().unwrap_or(c.default_subscribed),
                )
            })
            .collect(),
    ))
}
