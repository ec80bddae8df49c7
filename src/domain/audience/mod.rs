//! The audience's rules: what makes a user or a device acceptable, checked once
//! at the edge by both the API and the bulk importer (each turns
//! [`InvalidField`] into its own answer: a 400, or a refused row).

pub mod formats;

use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::campaign::{nul_at, Platform, NUL_REFUSED};
use crate::domain::locale::{Locale, LOCALE_EXPECTED};
use formats::{ExternalId, IanaZone, LanguageTag, PhoneNumber};

/// A field of a user or device that the checks refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }
}

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
    /// Anonymous installs (by install id) that are this user's: their devices
    /// are attached to the user (what a client key without an identity proof
    /// registered before sign-in).
    #[schema(value_type = Option<Vec<ExternalId>>, max_items = 20)]
    pub install_ids: Option<Vec<String>>,
}

/// Install ids one user write may attach.
pub const MAX_INSTALL_IDS: usize = 20;

/// An external id: 1–256 characters, no control characters.
pub fn check_external_id(field: &str, id: &str) -> Result<(), InvalidField> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(InvalidField::new(
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
pub fn check_token(platform: Platform, token: &str) -> Result<(), InvalidField> {
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
        Err(InvalidField::new(
            "token",
            match platform {
                Platform::Ios => "an APNs token is 64 or more hex digits",
                Platform::Android => "an FCM token is 1 to 4096 printable characters",
            },
        ))
    }
}

pub fn check_zone(zone: Option<&str>) -> Result<(), InvalidField> {
    match zone {
        Some(z) if crate::domain::zone::parse_zone(z).is_none() => Err(InvalidField::new(
            "timezone",
            format!("{z:?} is not an IANA time zone"),
        )),
        _ => Ok(()),
    }
}

pub fn check_locale(locale: Option<&str>) -> Result<(), InvalidField> {
    match locale {
        Some(l) if !Locale::is_valid(l) => Err(InvalidField::new("locale", LOCALE_EXPECTED)),
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
    /// Installs to attach to the user (none: leave devices as they are).
    pub install_ids: Vec<String>,
}

impl CheckedUser {
    /// Checks one user; `id_field` names the external id as the input spells it
    /// (`externalId` in JSON, `external_id` in a CSV header).
    pub fn check(
        id_field: &str,
        external_id: String,
        body: UserBody,
    ) -> Result<Self, InvalidField> {
        check_external_id(id_field, &external_id)?;
        check_zone(body.timezone.as_deref())?;
        check_locale(body.locale.as_deref())?;
        let phone = match body.phone.as_deref() {
            Some(raw) => Some(normalize_phone(raw).ok_or_else(|| {
                InvalidField::new(
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
            return Err(InvalidField::new("attributes", NUL_REFUSED));
        }
        let install_ids = body.install_ids.unwrap_or_default();
        if install_ids.len() > MAX_INSTALL_IDS {
            return Err(InvalidField::new(
                "installIds",
                format!("at most {MAX_INSTALL_IDS} install ids"),
            ));
        }
        for (i, id) in install_ids.iter().enumerate() {
            check_external_id(&format!("installIds[{i}]"), id)?;
        }
        Ok(Self {
            external_id,
            phone,
            timezone: body.timezone,
            locale: body.locale,
            attributes,
            install_ids,
        })
    }
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
            install_ids: None,
        };
        let user = CheckedUser::check(
            "externalId",
            "u1".into(),
            body(serde_json::json!({"a": [1]})),
        )
        .unwrap();
        assert_eq!(user.phone.as_deref(), Some("+4915112345678"));
        for nul in [
            serde_json::json!({"a": ["x\u{0}"]}),
            serde_json::json!({"\u{0}": 1}),
        ] {
            let e = CheckedUser::check("externalId", "u1".into(), body(nul)).unwrap_err();
            assert!(e.to_string().starts_with("attributes: "), "{e:?}");
        }
        let e = CheckedUser::check("external_id", String::new(), body(serde_json::json!({})))
            .unwrap_err();
        assert!(e.to_string().starts_with("external_id: "), "{e:?}");
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
        assert!(e.to_string().starts_with("token: "), "{e:?}");
    }
}
