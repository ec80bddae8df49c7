//! The console served beside the API on 127.0.0.1:0, and an outside client that
//! keeps cookies and reads CSRF tokens from forms as a browser would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use meridian::api::ApiState;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::console::accounts::{self, Actor};
use meridian::domain::operator::{AppGrant, Role};
use meridian::store::Store;

/// A password that passes the checks.
pub const PASSWORD: &str = "violet-harbour-lantern-42";

/// Serves the API and the console over `store` (with the client's address, as
/// `serve` does); the base URL.
pub async fn serve_console<S: Store>(store: Arc<S>, config: Config) -> String {
    serve_console_with(store, config, Arc::default()).await
}

/// [`serve_console`] with the live cache the caller holds (to count its reads).
pub async fn serve_console_with<S: Store>(
    store: Arc<S>,
    config: Config,
    live: Arc<meridian::console::live::LiveCache>,
) -> String {
    let api = ApiState::new(store, Arc::new(config), Arc::new(SystemClock));
    serve_state(meridian::console::ConsoleState::new(api, live)).await
}

/// [`serve_console`] counting each overview afresh (no 30 s reuse).
#[allow(dead_code)] // not every test binary uses it
pub async fn serve_console_uncached<S: Store>(store: Arc<S>, config: Config) -> String {
    let api = ApiState::new(store, Arc::new(config), Arc::new(SystemClock));
    let state = meridian::console::ConsoleState::new(api, Arc::default())
        .overviews_fresh_for(std::time::Duration::ZERO);
    serve_state(state).await
}

async fn serve_state<S: Store>(state: meridian::console::ConsoleState<S>) -> String {
    let api = state.api.clone();
    let router = meridian::console::beside_with(meridian::api::router(api), state)
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// Adds an operator with [`PASSWORD`].
pub async fn operator<S: Store>(store: &S, email: &str, role: Role, apps: AppGrant) {
    let actor = Actor {
        operator_id: None,
        name: "test",
        address: None,
    };
    accounts::add(
        store,
        email,
        role,
        &apps,
        PASSWORD,
        &actor,
        SystemClock.now(),
    )
    .await
    .unwrap();
}

/// An answer: status, the headers that matter, the body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The first form's CSRF token on the page.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

/// A browser-like client: keeps the cookies it is given, follows no redirect.
pub struct Client {
    base: String,
    http: reqwest::Client,
    cookies: Mutex<HashMap<String, String>>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Mutex::new(HashMap::new()),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let jar: String = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if jar.is_empty() {
            req
        } else {
            req.header("cookie", jar)
        };
        let res = req.send().await.unwrap();
        let headers = res.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            if v.is_empty() {
                jar.remove(k);
            } else {
                jar.insert(k.to_owned(), v.to_owned());
            }
        }
        Page {
            status: res.status().as_u16(),
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            set_cookies,
            headers,
            body: res.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    /// Signs in through the form; the answer to the form's POST.
    pub async fn sign_in(&self, email: &str, password: &str) -> Page {
        let form = self.get("/console/login").await;
        let csrf = form.csrf();
        self.post(
            "/console/login",
            &[("email", email), ("password", password), ("csrf", &csrf)],
        )
        .await
    }
}
