//! Admins' pages: an app's API keys (the secret shown once) and the operators.

use super::*;
use crate::console::accounts::{self, AccountError};
use crate::domain::keys::KeyKind;
use crate::domain::operator::AppGrant;

struct KeyRow {
    name: String,
    kind: &'static str,
    prefix: String,
    created: String,
    revoked: String,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    csrf: String,
    secret: Option<String>,
    error: Option<String>,
    keys: Vec<KeyRow>,
}

async fn keys_page<S: Store>(
    st: &ConsoleState<S>,
    s: &Signed,
    app: &str,
    secret: Option<String>,
    error: Option<String>,
) -> Result<Html<String>, PageError> {
    let keys = st
        .store
        .api_key_list(app)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            name: k.name,
            kind: k.kind.as_str(),
            prefix: k.prefix,
            created: minute(k.created_at),
            revoked: k.revoked_at.map(minute).unwrap_or_default(),
        })
        .collect();
    Ok(Html(
        KeysPage {
            asset_version: asset_version(),
            nav: Some(s.nav(app)),
            app,
            csrf: s.session.csrf_token.clone(),
            secret,
            error,
            keys,
        }
        .render()?,
    ))
}

pub async fn keys<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.require(Permission::ManageKeys)?;
    Ok(keys_page(&st, &s, &app, None, None).await?.into_response())
}

/// A field left out reads as empty: the checks below refuse it with a
/// page that says why, never the extractor's bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewKeyForm {
    csrf: String,
    name: String,
    /// `server` or `client`; a form without it makes a server key.
    kind: String,
}

/// Creates a key and shows its secret in the answer to the POST only.
pub async fn key_create<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(form): Form<NewKeyForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.csrf(&form.csrf)?;
    s.require(Permission::ManageKeys)?;
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        let page = keys_page(
            &st,
            &s,
            &app,
            None,
            Some("The name must have 1 to 100 characters.".into()),
        )
        .await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let kind = if form.kind.is_empty() {
        KeyKind::Server
    } else {
        match form.kind.parse::<KeyKind>() {
            Ok(k) => k,
            Err(e) => {
                let page = keys_page(&st, &s, &app, None, Some(e)).await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
        }
    };
    let key = crate::api::keys::generate().map_err(|e| PageError::Internal(e.to_string()))?;
    let now = st.clock.now();
    let created = st
        .store
        .api_key_create(
            &crate::store::NewApiKey {
                app_id: &app,
                name,
                kind,
                prefix: &key.prefix,
                hash: &key.hash,
            },
            now,
        )
        .await;
    match created {
        Ok(_) => {
            st.store
                .audit_append(&s.audit("api_key_created", Some(&app), Some(name), &addr, now))
                .await?;
            Ok(keys_page(&st, &s, &app, Some(key.secret), None)
                .await?
                .into_response())
        }
        Err(StoreError::Conflict { .. }) => {
            let message =
                format!("A key named {name:?} exists (names are not reused, even once revoked).");
            let page = keys_page(&st, &s, &app, None, Some(message)).await?;
            Ok((StatusCode::CONFLICT, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn key_revoke<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path((app, name)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.csrf(&form.csrf)?;
    s.require(Permission::ManageKeys)?;
    let now = st.clock.now();
    if !st.store.api_key_revoke(&app, &name, now).await? {
        return Err(PageError::NotFound);
    }
    st.store
        .audit_append(&s.audit("api_key_revoked", Some(&app), Some(&name), &addr, now))
        .await?;
    Ok(Redirect::to(&format!("/console/apps/{app}/keys")).into_response())
}

struct OperatorRow {
    id: i64,
    email: String,
    role: String,
    apps: String,
    state: String,
    disabled: bool,
}

#[derive(Template)]
#[template(path = "console/operators.html")]
struct OperatorsPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    csrf: String,
    created: Option<(String, String)>,
    error: Option<String>,
    operators: Vec<OperatorRow>,
}

/// Operators are managed by admins of every app only: an admin of some apps
/// could otherwise grant apps they do not have.
fn require_operator_admin(s: &Signed) -> Result<(), PageError> {
    s.require(Permission::ManageOperators)?;
    if s.session.apps != AppGrant::All {
        return Err(PageError::Forbidden(
            "Only an admin of every app manages operators.".to_owned(),
        ));
    }
    Ok(())
}

async fn operators_page<S: Store>(
    st: &ConsoleState<S>,
    s: &Signed,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Result<Html<String>, PageError> {
    let operators = st
        .store
        .operator_list()
        .await?
        .into_iter()
        .map(|o| OperatorRow {
            id: o.id,
            apps: match &o.apps {
                AppGrant::All => "all".to_owned(),
                AppGrant::Only(a) => a.join(", "),
            },
            state: if o.disabled_at.is_some() {
                "disabled"
            } else {
                "active"
            }
            .to_owned(),
            disabled: o.disabled_at.is_some(),
            role: o.role.to_string(),
            email: o.email,
        })
        .collect();
    Ok(Html(
        OperatorsPage {
            asset_version: asset_version(),
            nav: Some(s.nav("")),
            csrf: s.session.csrf_token.clone(),
            created,
            error,
            operators,
        }
        .render()?,
    ))
}

pub async fn operators<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    require_operator_admin(&s)?;
    Ok(operators_page(&st, &s, None, None).await?.into_response())
}

/// A field left out reads as empty: the checks below refuse it with a
/// page that says why, never the extractor's bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewOperatorForm {
    csrf: String,
    email: String,
    role: String,
    #[serde(default)]
    apps: String,
}

/// The operators page again, with why the form was refused.
async fn refuse<S: Store>(
    st: &ConsoleState<S>,
    s: &Signed,
    e: AccountError,
) -> Result<Response, PageError> {
    let page = operators_page(st, s, None, Some(e.to_string())).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// Adds an operator with a generated password, shown once in the answer.
pub async fn operator_add<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Form(form): Form<NewOperatorForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.csrf(&form.csrf)?;
    require_operator_admin(&s)?;
    let role = match form.role.parse() {
        Ok(r) => r,
        Err(m) => {
            return refuse(
                &st,
                &s,
                AccountError::Invalid {
                    field: "role",
                    message: m,
                },
            )
            .await
        }
    };
    let apps = form.apps.trim();
    let grant = if apps.is_empty() || apps == "all" {
        None
    } else {
        Some(apps)
    };
    let grant = match accounts::parse_apps(&st.config, grant) {
        Ok(g) => g,
        Err(e) => return refuse(&st, &s, e).await,
    };
    let password =
        super::super::auth::random_password().map_err(|e| PageError::Internal(e.to_string()))?;
    let now = st.clock.now();
    match accounts::add(
        &*st.store,
        &form.email,
        role,
        &grant,
        &password,
        &s.actor(&addr),
        now,
    )
    .await
    {
        Ok(email) => Ok(operators_page(&st, &s, Some((email, password)), None)
            .await?
            .into_response()),
        Err(e @ AccountError::Invalid { .. }) => refuse(&st, &s, e).await,
        Err(e) => Err(PageError::Internal(e.to_string())),
    }
}

/// Disables or enables an operator (never oneself: that would lock the door).
pub async fn operator_set<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path((id, verb)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.csrf(&form.csrf)?;
    require_operator_admin(&s)?;
    let disabled = match verb.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(PageError::NotFound),
    };
    if id == s.session.operator_id {
        return Err(PageError::Forbidden(
            "You cannot disable or enable yourself.".to_owned(),
        ));
    }
    let op = st
        .store
        .operator_list()
        .await?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or(PageError::NotFound)?;
    accounts::set_disabled(
        &*st.store,
        &op.email,
        disabled,
        &s.actor(&addr),
        st.clock.now(),
    )
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?;
    Ok(Redirect::to("/console/operators").into_response())
}
