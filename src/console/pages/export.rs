//! A campaign's deliveries as CSV, streamed page by page (5,000 rows a read,
//! newest first, by the API's own message listing), so memory stays flat
//! however many there are and no read holds a transaction open between pages.

use axum::body::Body;
use futures::{stream, StreamExt};

use super::*;
use crate::store::{DeliveryFilter, DeliveryRecord};

const PAGE: i64 = 5_000;

const HEADER: &str =
    "message_id,user_external_id,platform,status,attempts,provider_id,error_reason,created_at,sent_at,updated_at\n";

/// One CSV field: quoted when it must be (RFC 4180), and kept from being
/// read as a formula by a spreadsheet (a leading `=`, `@`, or a `+`/`-` that
/// does not start a number, gets a `'`).
fn field(s: &str) -> String {
    let formula = s.starts_with(['=', '@', '\t', '\r'])
        || (s.starts_with(['+', '-'])
            && !s[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || c == '.'));
    let s = if formula {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn row(d: &DeliveryRecord) -> String {
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let cells = [
        d.id.to_string(),
        field(d.user_external_id.as_deref().unwrap_or_default()),
        field(d.platform.as_deref().unwrap_or_default()),
        field(&d.status),
        d.attempts.to_string(),
        field(d.provider_id.as_deref().unwrap_or_default()),
        field(d.error_reason.as_deref().unwrap_or_default()),
        time(Some(d.created_at)),
        time(d.sent_at),
        time(Some(d.updated_at)),
    ];
    let mut line = cells.join(",");
    line.push('\n');
    line
}

/// `GET …/campaigns/{id}/deliveries.csv`.
pub async fn campaign_csv<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let c = campaign_of(&st, &app, id).await?;
    let store = st.store.clone();
    // State: the next page's cursor, `None` once the last page is out.
    let pages = stream::unfold(Some(i64::MAX), move |cursor| {
        let store = store.clone();
        let app = app.clone();
        async move {
            let before = cursor?;
            let filter = DeliveryFilter {
                campaign_id: Some(id),
                before_id: Some(before),
                limit: PAGE,
                ..DeliveryFilter::default()
            };
            match store.message_list(&app, &filter).await {
                Ok(rows) => {
                    let next = (rows.len() as i64 == PAGE)
                        .then(|| rows.last().map(|r| r.id))
                        .flatten();
                    let chunk: String = rows.iter().map(row).collect();
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), next))
                }
                Err(e) => {
                    // The response has begun: the error ends it short, and is logged.
                    tracing::error!(message = "Deliveries export failed.", campaign = id, error = %e);
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    let body =
        stream::once(async { Ok(bytes::Bytes::from_static(HEADER.as_bytes())) }).chain(pages);
    let filename = format!("{}-deliveries.csv", c.key);
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_quoted_and_never_formulas() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(
            field("+49 151 1234"),
            "+49 151 1234",
            "a phone number stays"
        );
        assert_eq!(field("-cmd"), "'-cmd");
    }
}
