//! The value formats the API's validators accept, as OpenAPI schemas: each is
//! the documented twin of one check (`check_external_id`, `normalize_phone`,
//! `check_token`, …), and `tests/openapi_schemas.rs` probes every request body
//! against both so that the document never says less (or more) than the server.
//!
//! Patterns are ECMA-262 regular expressions (JSON Schema's dialect) that the
//! `regex` crate reads alike.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// No control character (what `char::is_control` refuses: C0, DEL, C1).
pub const NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$";
/// An APNs device token: hex, an even count of 64 to 200 digits.
pub const APNS_TOKEN: &str = "^([0-9A-Fa-f]{2}){32,100}$";
/// An FCM registration token: 1 to 4096 printable ASCII characters, no space.
pub const FCM_TOKEN: &str = "^[!-~]{1,4096}$";
/// A phone number as people write it: `+` or `00`, then 7 to 15 digits not
/// starting with 0, with spaces, dots, dashes and parentheses anywhere.
pub const PHONE: &str = "^[ .()-]*(\\+|0[ .()-]*0)[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*$";
/// A language tag as `domain::locale::Locale` takes it (`de-DE`, `pt_BR`); its
/// length limit is the schema's `maxLength`.
pub const LANGUAGE_TAG: &str = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$";
/// Something besides white space.
pub const NOT_BLANK: &str = "\\S";
/// An http(s) URL with a host.
pub const HTTP_URL: &str = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#]\\S*)?$";
/// A URI with a scheme (`shop://orders/1`, `https://…`).
pub const URI: &str = "^[A-Za-z][A-Za-z0-9+.-]*:\\S*$";

/// A string schema.
pub fn string(description: &str, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
}

/// `null` or the component `T`, for optional members that take `null`.
pub fn nullable<T: ToSchema>() -> RefOr<Schema> {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(Ref::from_schema_name(T::name()))
        .into()
}

/// An external id (users, installs): 1 to 256 characters, no control characters.
pub struct ExternalId;

impl PartialSchema for ExternalId {
    fn schema() -> RefOr<Schema> {
        string(
            "An id of the partner's: 1 to 256 characters, no control characters",
            NO_CONTROL,
        )
        .min_length(Some(1))
        .max_length(Some(256))
        .into()
    }
}

impl ToSchema for ExternalId {}

/// An IANA time zone the compiled tzdata knows.
pub struct IanaZone;

impl PartialSchema for IanaZone {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An IANA time zone (the tzdata compiled in)"))
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|z| z.name())))
            .into()
    }
}

impl ToSchema for IanaZone {}

/// A language tag.
pub struct LanguageTag;

impl PartialSchema for LanguageTag {
    fn schema() -> RefOr<Schema> {
        string(
            "A language tag such as `de-DE`: a language of 2 or 3 letters, then subtags of \
             1 to 8 letters or digits after `-` or `_`",
            LANGUAGE_TAG,
        )
        .max_length(Some(crate::domain::locale::Locale::MAX_LEN))
        .into()
    }
}

impl ToSchema for LanguageTag {}

/// A phone number, stored in E.164.
pub struct PhoneNumber;

impl PartialSchema for PhoneNumber {
    fn schema() -> RefOr<Schema> {
        string(
            "A phone number as people write it (`+49 151 1234-5678`, `0049…`); stored in E.164",
            PHONE,
        )
        .into()
    }
}

impl ToSchema for PhoneNumber {}
