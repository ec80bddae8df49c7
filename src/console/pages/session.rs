//! Signing in and out, and the way in.

use super::*;
use crate::console::accounts::Actor;

pub async fn home<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    match s.apps.first() {
        Some(app) => Ok(Redirect::to(&format!("/console/apps/{app}")).into_response()),
        None => Ok(error_page(
            StatusCode::OK,
            "No app yet",
            "No configured app is granted to you; ask an admin.",
        )),
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    error: Option<&'a str>,
    email: &'a str,
    csrf: &'a str,
}

fn login_page(
    st_secure: bool,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
) -> Result<Response, PageError> {
    let csrf = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let html = LoginPage {
        asset_version: asset_version(),
        nav: None,
        error,
        email,
        csrf: &csrf,
    }
    .render()?;
    let mut res = (status, Html(html)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &csrf, 3600, st_secure),
    );
    Ok(res)
}

pub async fn login_form<S: Store>(
    State(st): State<ConsoleState<S>>,
) -> Result<Response, PageError> {
    login_page(
        st.config.server.console.secure_cookie,
        StatusCode::OK,
        None,
        "",
    )
}

/// A field left out reads as empty: the checks below refuse it with a
/// page that says why, never the extractor's bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

pub async fn login<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let secure = st.config.server.console.secure_cookie;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(expected, &form.csrf) {
        return Err(PageError::Csrf);
    }
    let now = st.clock.now();
    let email = normalize_email(&form.email).unwrap_or_else(|_| form.email.trim().to_lowercase());
    let since = now - TimeDelta::minutes(THROTTLE_WINDOW_MINUTES);
    let (by_account, by_address) = st
        .store
        .signin_failure_count(&email, &addr.0, since)
        .await?;
    if by_account >= MAX_FAILURES_PER_ACCOUNT || by_address >= MAX_FAILURES_PER_ADDRESS {
        let message =
            format!("Too many failed sign-ins: try again in {THROTTLE_WINDOW_MINUTES} minutes.");
        return login_page(
            secure,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&message),
            &email,
        );
    }
    let operator = st.store.operator_get_by_email(&email).await?;
    let hash = operator
        .as_ref()
        .filter(|o| o.disabled_at.is_none())
        .map_or(dummy_hash(), |o| o.password_hash.as_str())
        .to_owned();
    // Argon2 takes tens of milliseconds by design: off the runtime's threads.
    let password = form.password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let operator = match operator {
        Some(o) if matches && o.disabled_at.is_none() => o,
        _ => {
            st.store
                .audit_append(
                    &Actor {
                        operator_id: None,
                        name: &email,
                        address: Some(&addr.0),
                    }
                    .entry("signin_failed", None, None, now),
                )
                .await?;
            return login_page(
                secure,
                StatusCode::UNAUTHORIZED,
                Some("The email or the password is wrong."),
                &email,
            );
        }
    };
    // A fresh token at every sign-in; a session the browser still had ends.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        st.store.session_delete(&token_hash(old)).await?;
    }
    let token = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let csrf = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let max_age =
        TimeDelta::from_std(st.config.server.console.max_age).unwrap_or(TimeDelta::hours(12));
    st.store
        .session_create(
            &NewSession {
                token_hash: &token_hash(&token),
                operator_id: operator.id,
                csrf_token: &csrf,
                address: Some(&addr.0),
                expires_at: now + max_age,
            },
            now,
        )
        .await?;
    st.store
        .audit_append(
            &Actor {
                operator_id: Some(operator.id),
                name: &operator.email,
                address: Some(&addr.0),
            }
            .entry("signin", None, None, now),
        )
        .await?;
    let mut res = Redirect::to("/console").into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, max_age.num_seconds(), secure),
    );
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
    Ok(res)
}

pub async fn logout<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.csrf(&form.csrf)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        st.store.session_delete(&token_hash(token)).await?;
    }
    let now = st.clock.now();
    st.store
        .audit_append(&s.audit("signout", None, None, &addr, now))
        .await?;
    let mut res = Redirect::to("/console/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            0,
            st.config.server.console.secure_cookie,
        ),
    );
    Ok(res)
}
