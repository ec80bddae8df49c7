//! `POST /v1/users:import`: bulk user upserts from NDJSON or CSV, read as the
//! body streams in (see `crate::import` for the formats and the row rules).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;

use super::openapi::{ErrorBody, KeyRefusals};
use super::{ApiError, ApiState, AppKey};
use crate::import::{self, Format, ImportError, Summary};
use crate::store::Store;

/// Largest import body; the route reads its body itself, so the API's 1 MiB
/// `BODY_LIMIT` does not apply to it.
pub const IMPORT_BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// Why the body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("larger than {} MiB", IMPORT_BODY_LIMIT / (1024 * 1024))]
    TooLarge,
    #[error("{0}")]
    Read(axum::Error),
}

/// `POST /v1/users:import`: every row is checked as `PUT /v1/users/{id}` checks
/// its body; the good ones are written into the key's app in batches, the bad
/// ones counted and the first of them listed by line.
#[utoipa::path(
    post,
    path = "/v1/users:import",
    tag = "audience",
    operation_id = "importUsers",
    request_body(
        description = "NDJSON (`{\"externalId\": …}` plus the fields of `PUT /v1/users/{external_id}`, a line each) \
                       or CSV (a header with `external_id` and optional `phone`, `timezone`, `locale`; \
                       other columns are string attributes); up to 256 MiB, read as it streams",
        content(
            (String = "application/x-ndjson"),
            (String = "application/jsonl"),
            (String = "text/csv"),
        )
    ),
    responses(
        (status = 200, description = "Rows written and rows refused, with the first 100 refusals by line", body = crate::import::Summary),
        (status = 400, description = "A CSV header without `external_id`, or a body that could not be read", body = ErrorBody),
        (status = 413, description = "A body over 256 MiB; the message says how many rows were written before", body = ErrorBody),
        (status = 415, description = "A content type other than NDJSON or CSV", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn import_users<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Summary>, ApiError> {
    let format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_media_type)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type: expected application/x-ndjson, application/jsonl or text/csv",
            )
        })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > IMPORT_BODY_LIMIT) {
        return Err(too_large(BodyError::TooLarge, None));
    }
    let mut seen = 0u64;
    let chunks = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(BodyError::Read)?;
        seen += chunk.len() as u64;
        if seen > IMPORT_BODY_LIMIT {
            return Err(BodyError::TooLarge);
        }
        Ok(chunk)
    });
    match import::run(&*st.store, &app, format, &*st.clock, chunks, |_, _| {}).await {
        Ok(summary) => Ok(Json(summary)),
        Err(ImportError::Header(e)) => Err(ApiError::field("header", e)),
        Err(ImportError::Read {
            source: e @ BodyError::TooLarge,
            done,
        }) => Err(too_large(e, Some(&done))),
        Err(ImportError::Read {
            source: BodyError::Read(e),
            ..
        }) => Err(ApiError::field("body", format!("reading failed: {e}"))),
        Err(ImportError::Store { source, .. }) => Err(source.into()),
    }
}

/// A 413; once rows were read, it says how many were written before the limit.
fn too_large(e: BodyError, done: Option<&Summary>) -> ApiError {
    let written = done.map_or(String::new(), |d| {
        format!("; {} rows were written before it", d.accepted)
    });
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("body: {e}{written}"),
    )
}
