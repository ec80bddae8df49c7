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

use super::formats::{self, ExternalId, IanaZone, LanguageTag, PhoneNumber};

use super::openapi::{BodyRefusals, ErrorBody, KeyRefusals};
use super::{ApiError, ApiState, AppKey, Body, Path};
use crate::campaign::{nul_at, Platform, NUL_REFUSED};
use crate::store::{DeviceUpsert, Store, UserUpsert};

/// A user's fields; an absent one keeps what is stored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserBody {
    /// A phone number as people write it; stored in E.164.
    #[schema(value_type = Option<PhoneNumber>, example = "+49 151 1234 5678")]
    pub phone: Option<String>,
    /// An IANA time zone.
    #[schema(value_type = Option<IanaZone>, example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// A language tag.
    #[schema(value_type = Option<LanguageTag>, example = "de-DE")]
    pub locale: Option<String>,
    /// Free attributes for audience filters; replaces the stored ones.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

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

/// An external id: 1–256 characters, no control characters.
pub fn check_external_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must be 1 to 256 characters without control characters",
        ));
    }
    Ok(())
}

/// A phone number in E.164 (`+` and 7–15 digits), from the forms people write:
/// spaces, dashes, dots and parentheses are dropped; `00` becomes `+`.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').or_else(|| kept.strip_prefix("00"))?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

/// A device token as the provider issues it: APNs tokens are hex (64 digits today,
/// longer allowed), FCM registration tokens are printable ASCII without spaces.
pub fn check_token(platform: Platform, token: &str) -> Result<(), ApiError> {
    let ok = match platform {
        Platform::Ios => {
            (64..=200).contains(&token.len())
                && token.len() % 2 == 0
                && token.bytes().all(|b| b.is_ascii_hexdigit())
        }
        Platform::Android => {
            (1..=4096).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "token",
            match platform {
                Platform::Ios => "an APNs token is 64 or more hex digits",
                Platform::Android => "an FCM token is 1 to 4096 printable characters",
            },
        ))
    }
}

fn check_zone(zone: Option<&str>) -> Result<(), ApiError> {
    match zone {
        Some(z) if crate::zone::parse_zone(z).is_none() => Err(ApiError::field(
            "timezone",
            format!("{z:?} is not an IANA time zone"),
        )),
        _ => Ok(()),
    }
}

fn check_locale(locale: Option<&str>) -> Result<(), ApiError> {
    match locale {
        Some(l)
            if l.is_empty()
                || l.len() > 35
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(ApiError::field(
                "locale",
                "expected a language tag such as \"en-US\"",
            ))
        }
        _ => Ok(()),
    }
}

/// A user as `PUT /v1/users/{external_id}` and the bulk import write it, after
/// every check: the phone in E.164, the zone and locale known good.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedUser {
    pub external_id: String,
    pub phone: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub attributes: Option<serde_json::Value>,
}

impl CheckedUser {
    /// Checks one user; `id_field` names the external id as the input spells it
    /// (`externalId` in JSON, `external_id` in a CSV header).
    pub fn check(id_field: &str, external_id: String, body: UserBody) -> Result<Self, ApiError> {
        check_external_id(id_field, &external_id)?;
        check_zone(body.timezone.as_deref())?;
        check_locale(body.locale.as_deref())?;
        let phone = match body.phone.as_deref() {
            Some(raw) => Some(normalize_phone(raw).ok_or_else(|| {
                ApiError::field(
                    "phone",
                    "expected an E.164 number such as \"+4915112345678\"",
                )
            })?),
            None => None,
        };
        let attributes = body.attributes.map(serde_json::Value::Object);
        // Postgres cannot store U+0000 in jsonb: refused here, it would fail the
        // whole write (and a bulk import's whole batch) as a storage error.
        if attributes.as_ref().and_then(|a| nul_at(a, "")).is_some() {
            return Err(ApiError::field("attributes", NUL_REFUSED));
        }
        Ok(Self {
            external_id,
            phone,
            timezone: body.timezone,
            locale: body.locale,
            attributes,
        })
    }

    /// The store's view of this user, in `app_id`.
    pub fn upsert<'a>(&'a self, app_id: &'a str) -> UserUpsert<'a> {
        UserUpsert {
            app_id,
            external_id: &self.external_id,
            phone: self.phone.as_deref(),
            timezone: self.timezone.as_deref(),
            locale: self.locale.as_deref(),
            attributes: self.attributes.as_ref(),
        }
    }
}

/// `PUT /v1/users/{external_id}`: creates or updates a user; absent fields keep
/// what is stored.
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
    st.store
        .upsert_user(&user.upsert(&app), st.clock.now())
        .await?;
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
    AppKey(app): AppKey,
    Body(body): Body<DeviceBody>,
) -> Result<impl IntoResponse, ApiError> {
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
    let record = st
        .store
        .upsert_device(
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
    Ok(Json(DeviceView {
        token: record.token,
        platform: record.platform,
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
    AppKey(app): AppKey,
    Path(token): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let device = st
        .store
        .device_by_token(&app, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    st.store
        .invalidate_device(device.id, "unregistered", st.clock.now())
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
    AppKey(app): AppKey,
    Path(external_id): Path<String>,
    Body(body): Body<BTreeMap<String, bool>>,
) -> Result<impl IntoResponse, ApiError> {
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
        .set_subscriptions(&app, &external_id, &choices, st.clock.now())
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
    AppKey(app): AppKey,
    Path(external_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    effective_subscriptions(&st, &app, &external_id).await
}

async fn effective_subscriptions<S: Store>(
    st: &ApiState<S>,
    app: &str,
    external_id: &str,
) -> Result<Json<BTreeMap<String, bool>>, ApiError> {
    let chosen: BTreeMap<String, bool> = st
        .store
        .subscriptions(app, external_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(
            normalize_phone("+49 151 1234-5678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalize_phone("0049 (151) 12345678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalize_phone("+1.415.555.0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(normalize_phone("015112345678"), None, "no country code");
        assert_eq!(normalize_phone("+0151123456"), None);
        assert_eq!(normalize_phone("+12"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None, "16 digits");
        assert_eq!(normalize_phone("+49abc1234567"), None);
    }

    #[test]
    fn a_checked_user_has_its_phone_normalised_and_no_nul() {
        let body = |attributes: serde_json::Value| UserBody {
            phone: Some("0049 151 12345678".into()),
            timezone: Some("Europe/Berlin".into()),
            locale: None,
            attributes: attributes.as_object().cloned(),
        };
        let user = CheckedUser::check(
            "externalId",
            "u1".into(),
            body(serde_json::json!({"a": [1]})),
        )
        .unwrap();
        assert_eq!(user.phone.as_deref(), Some("+4915112345678"));
        let upsert = user.upsert("shop");
        assert_eq!((upsert.app_id, upsert.external_id), ("shop", "u1"));
        for nul in [
            serde_json::json!({"a": ["x\u{0}"]}),
            serde_json::json!({"\u{0}": 1}),
        ] {
            let e = CheckedUser::check("externalId", "u1".into(), body(nul)).unwrap_err();
            assert!(e.message.starts_with("attributes: "), "{e:?}");
        }
        let e = CheckedUser::check("external_id", String::new(), body(serde_json::json!({})))
            .unwrap_err();
        assert!(e.message.starts_with("external_id: "), "{e:?}");
    }

    #[test]
    fn tokens_are_checked_per_platform() {
        assert!(check_token(Platform::Ios, &"ab".repeat(32)).is_ok());
        assert!(check_token(Platform::Ios, &"ab".repeat(16)).is_err());
        assert!(check_token(Platform::Ios, &"zz".repeat(32)).is_err());
        assert!(check_token(Platform::Android, "fcm:APA91b-x_y").is_ok());
        assert!(check_token(Platform::Android, "has space").is_err());
        assert!(check_token(Platform::Android, "").is_err());
        let e = check_token(Platform::Ios, "x").unwrap_err();
        assert!(e.message.starts_with("token: "), "{e:?}");
    }
}
