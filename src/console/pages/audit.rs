//! The audit log, for admins.

use super::*;

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    app: String,
    target: String,
    address: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    entries: Vec<AuditRow>,
}

pub async fn audit<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.require(Permission::ReadAudit)?;
    let entries = st
        .store
        .audit_list(200)
        .await?
        .into_iter()
        .map(|e| AuditRow {
            at: e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            actor: e.actor,
            action: e.action,
            app: e.app_id.unwrap_or_default(),
            target: e.target.unwrap_or_default(),
            address: e.address.unwrap_or_default(),
        })
        .collect();
    let html = AuditPage {
        asset_version: asset_version(),
        nav: Some(s.nav("")),
        entries,
    }
    .render()?;
    Ok(Html(html).into_response())
}
