//! The composer: a new campaign, or an edit while it is a draft or scheduled.
//! As the operator types, htmx posts the form to `compose/check`, which
//! validates it with the campaign's own validator and answers the preview and
//! every field's error slot (filled or emptied, out of band).

use super::*;
use crate::console::compose::{ComposeForm, FieldErrors, Layout, Preview};
use crate::definitions::ApplyError;
use crate::domain::campaign::{AppContext, CampaignDefinition, DesiredStatus, FieldError};

#[derive(Template)]
#[template(path = "console/compose.html")]
struct ComposePage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    /// The campaign being edited; `None` for a new one.
    id: Option<i64>,
    state: String,
    csrf: String,
    form: ComposeForm,
    errors: FieldErrors,
    preview: Preview,
    topics: Vec<String>,
    zones: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "console/compose_check.html")]
struct CheckPart<'a> {
    app: &'a str,
    form: ComposeForm,
    preview: Preview,
    /// Every error slot with its text (empty clears it).
    slots: Vec<(String, String)>,
}

/// The form read and validated: the definition, and every problem by field.
struct Checked {
    def: CampaignDefinition,
    layout: Layout,
    errors: Vec<FieldError>,
}

fn check(st_config: &crate::config::Config, app: &str, form: &ComposeForm) -> Checked {
    let (def, layout, mut errors) = form.to_definition(app);
    if let Some(app_config) = st_config.app(app) {
        if let Err(e) = def.validate(&AppContext {
            app_id: app,
            topics: app_config.topic_names(),
        }) {
            errors.extend(e.0);
        }
    }
    Checked {
        def,
        layout,
        errors,
    }
}

fn csrf_of(pairs: &[(String, String)]) -> &str {
    pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str())
}

#[allow(clippy::too_many_arguments)]
fn page(
    st_config: &crate::config::Config,
    s: &Signed,
    app: &str,
    id: Option<i64>,
    state: Option<CampaignState>,
    form: ComposeForm,
    errors: FieldErrors,
    def: &CampaignDefinition,
) -> Result<Html<String>, PageError> {
    let topics = st_config
        .app(app)
        .map(|a| a.topic_names().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let html = ComposePage {
        asset_version: asset_version(),
        nav: Some(s.nav(app)),
        app,
        id,
        state: state.map(|s| s.to_string()).unwrap_or_default(),
        csrf: s.session.csrf_token.clone(),
        preview: Preview::of(def, &form.preview_locale),
        form,
        errors,
        topics,
        zones: crate::domain::zone::canonical_zones()
            .into_iter()
            .map(|tz| tz.name())
            .collect(),
    }
    .render()?;
    Ok(Html(html))
}

/// `GET …/campaigns/new`: an empty composer (editors and admins).
pub async fn compose_new<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.require(Permission::EditCampaigns)?;
    let form = ComposeForm::blank();
    let (def, _, _) = form.to_definition(&app);
    Ok(page(
        &st.config,
        &s,
        &app,
        None,
        None,
        form,
        FieldErrors::default(),
        &def,
    )?
    .into_response())
}

/// `GET …/campaigns/{id}/edit`: the composer with the stored definition.
pub async fn compose_edit<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.require(Permission::EditCampaigns)?;
    let c = campaign_of(&st, &app, id).await?;
    if !c.state.is_editable() {
        return Err(PageError::Conflict(format!(
            "A {} campaign cannot be edited; only drafts and scheduled campaigns can.",
            c.state
        )));
    }
    let def = definitions::stored_definition(&c).map_err(|e| PageError::Internal(e.to_string()))?;
    let form = ComposeForm::from_definition(&def);
    Ok(page(
        &st.config,
        &s,
        &app,
        Some(id),
        Some(c.state),
        form,
        FieldErrors::default(),
        &def,
    )?
    .into_response())
}

/// `POST …/compose/check`: the preview and the field errors, as the operator types.
pub async fn compose_check<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.csrf(csrf_of(&pairs))?;
    s.require(Permission::EditCampaigns)?;
    let form = ComposeForm::from_pairs(&pairs);
    let checked = check(&st.config, &app, &form);
    let errors = FieldErrors::new(&checked.errors, &checked.layout);
    let slots = form
        .slots()
        .into_iter()
        .map(|slot| {
            let text = errors.get(&slot);
            (slot, text)
        })
        .collect();
    let html = CheckPart {
        app: &app,
        preview: Preview::of(&checked.def, &form.preview_locale),
        form,
        slots,
    }
    .render()?;
    Ok(Html(html).into_response())
}

/// `POST …/campaigns/new` and `POST …/campaigns/{id}/edit`: saves the form.
/// A new campaign is a draft; an edited one keeps its state (a scheduled one
/// is planned again). Invalid input shows the form again with every error
/// beside its field, and writes nothing.
async fn save_form<S: Store>(
    st: &ConsoleState<S>,
    s: &Signed,
    addr: &ClientAddress,
    app: &str,
    existing: Option<crate::store::CampaignRecord>,
    pairs: &[(String, String)],
) -> Result<Response, PageError> {
    s.csrf(csrf_of(pairs))?;
    s.require(Permission::EditCampaigns)?;
    let form = ComposeForm::from_pairs(pairs);
    let Checked {
        mut def,
        layout,
        errors,
    } = check(&st.config, app, &form);
    let id = existing.as_ref().map(|c| c.id);
    let state = existing.as_ref().map(|c| c.state);
    let invalid = |errors: Vec<FieldError>, def: &CampaignDefinition, form: ComposeForm| {
        let shown = FieldErrors::new(&errors, &layout);
        page(&st.config, s, app, id, state, form, shown, def)
            .map(|html| (StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
    };
    if !errors.is_empty() {
        return invalid(errors, &def, form);
    }
    if state == Some(CampaignState::Scheduled) {
        def.status = DesiredStatus::Scheduled;
    }
    let now = st.clock.now();
    let result = match &existing {
        None => definitions::create(&*st.store, &st.config, &def, now).await,
        Some(c) => definitions::replace(&*st.store, &st.config, c, &def, now).await,
    };
    let applied = match result {
        Ok(applied) => applied,
        Err(e) if e.is_input() => {
            let errors = match e {
                ApplyError::Invalid(v) => v.0,
                ApplyError::Exists { .. } => vec![FieldError {
                    field: "key".to_owned(),
                    message: "another campaign of this app has this key".to_owned(),
                }],
                // The planner's errors begin with their field (`schedule.at: …`).
                ApplyError::Plan(p) => {
                    let text = p.to_string();
                    let (field, message) = text
                        .split_once(": ")
                        .filter(|(f, _)| f.starts_with("schedule"))
                        .unwrap_or(("schedule", text.as_str()));
                    vec![FieldError {
                        field: field.to_owned(),
                        message: message.to_owned(),
                    }]
                }
                other => vec![FieldError {
                    field: "other".to_owned(),
                    message: other.to_string(),
                }],
            };
            return invalid(errors, &def, form);
        }
        Err(e) => return Err(PageError::Internal(e.to_string())),
    };
    let record = applied.record;
    st.live.forget(record.id);
    let action = if existing.is_some() {
        "campaign_edit"
    } else {
        "campaign_create"
    };
    st.store
        .audit_append(&s.audit(action, Some(app), Some(&record.key), addr, now))
        .await?;
    Ok(Redirect::to(&format!(
        "/console/apps/{app}/campaigns/{}?done=saved",
        record.id
    ))
    .into_response())
}

pub async fn compose_create<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    save_form(&st, &s, &addr, &app, None, &pairs).await
}

pub async fn compose_update<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let c = campaign_of(&st, &app, id).await?;
    save_form(&st, &s, &addr, &app, Some(c), &pairs).await
}
