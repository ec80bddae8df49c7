//! Bulk user import, shared by `POST /v1/users:import` and `meridian import
//! users`: NDJSON or CSV in, every row checked exactly as `PUT
//! /v1/users/{external_id}` checks its body ([`CheckedUser::check`]), the good
//! ones written in batches. The input arrives in chunks and is never held whole.
//!
//! - NDJSON: one JSON object a line, the PUT body plus the id:
//!   `{"externalId": "u1", "phone": "+49…", "timezone": "Europe/Berlin",
//!   "locale": "de-DE", "attributes": {"tier": "gold"}}`; other keys are refused.
//! - CSV (RFC 4180, UTF-8, a header line first): the columns `external_id`
//!   (required), `phone`, `timezone` and `locale`; every other column is a string
//!   attribute. An empty cell is an absent field, so the stored value stays. When
//!   the header has attribute columns, each row's non-empty ones *replace* the
//!   user's attributes, as `attributes` does in the PUT body.
//!
//! Blank lines are skipped. A rejected row writes nothing and stops nothing; a
//! CSV header no row can be read with stops the import before anything is written.

mod csv;

use crate::clock::Clock;
use crate::domain::audience::{CheckedUser, InvalidField, UserBody};
use crate::store::{Store, StoreError, UserUpsert};
use bytes::Bytes;
use csv::{Header, Piece, Splitter};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::path::Path;

/// Rows written per batch: one transaction of a few set-based statements.
pub const BATCH_ROWS: usize = 500;

/// A batch is written early once its rows' input passes this, bounding its memory.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The longest line (CSV record) read: as large as a whole `PUT` body.
pub const MAX_RECORD: usize = 1024 * 1024;

/// How many rejected rows are reported with their line and problem.
pub const MAX_ERRORS: usize = 100;

/// The two input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    /// From a `Content-Type` (its parameters, such as `charset`, are ignored).
    pub fn from_media_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/x-ndjson" | "application/jsonl" => Some(Self::Ndjson),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// From a file's extension: `.ndjson` or `.jsonl`, and `.csv`.
    pub fn from_path(path: &Path) -> Option<Self> {
        path.extension()?.to_str()?.parse().ok()
    }
}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an import format; expected ndjson or csv")]
pub struct UnknownFormat(String);

/// What an import did: rows written, rows refused, and the first refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ImportSummary)]
pub struct Summary {
    pub accepted: u64,
    pub rejected: u64,
    /// At most [`MAX_ERRORS`], in input order.
    pub errors: Vec<LineError>,
}

/// A rejected row: its (first) line in the input and `field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// Why one row was rejected, as `field: problem` like the API's error messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(String);

impl RowError {
    fn field(field: &str, problem: impl Display) -> Self {
        Self(format!("{field}: {problem}"))
    }
}

impl From<InvalidField> for RowError {
    fn from(e: InvalidField) -> Self {
        Self(e.to_string())
    }
}

/// A CSV header that no row could be read with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no external_id column")]
    NoExternalId,
    #[error("column {0} has no name")]
    EmptyName(usize),
    #[error("column {0:?} appears twice")]
    Duplicate(String),
    #[error("{0}")]
    Malformed(RowError),
}

/// Why an import stopped. Batches written before the stop stay written (the
/// rows are upserts, so running the same input again is safe); `done` says
/// what had been done.
#[derive(Debug, thiserror::Error)]
pub enum ImportError<E> {
    #[error("line 1, the CSV header: {0}")]
    Header(HeaderError),
    #[error("reading the input: {source}")]
    Read { source: E, done: Summary },
    #[error("storage: {source}")]
    Store { source: StoreError, done: Summary },
}

/// Reads `input` to its end and writes its good rows into `app_id` in batches;
/// `progress` hears the bytes read so far after every chunk.
pub async fn run<S: Store, E>(
    store: &S,
    app_id: &str,
    format: Format,
    clock: &dyn Clock,
    input: impl Stream<Item = Result<Bytes, E>>,
    mut progress: impl FnMut(u64, &Summary),
) -> Result<Summary, ImportError<E>> {
    let mut input = std::pin::pin!(input);
    let mut rows = Rows::new(format);
    let mut read = 0u64;
    while let Some(chunk) = input.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(source) => {
                return Err(ImportError::Read {
                    source,
                    done: rows.summary,
                })
            }
        };
        read += chunk.len() as u64;
        rows.push(&chunk).map_err(ImportError::Header)?;
        write_ready(store, app_id, clock, &mut rows).await?;
        progress(read, &rows.summary);
    }
    rows.finish().map_err(ImportError::Header)?;
    write_ready(store, app_id, clock, &mut rows).await?;
    Ok(rows.summary)
}

async fn write_ready<S: Store, E>(
    store: &S,
    app_id: &str,
    clock: &dyn Clock,
    rows: &mut Rows,
) -> Result<(), ImportError<E>> {
    for batch in std::mem::take(&mut rows.ready) {
        let users: Vec<UserUpsert<'_>> = batch
            .iter()
            .map(|u| UserUpsert::checked(app_id, u))
            .collect();
        // Installs named by a row are attached after their users exist.
        let installs: Vec<(&str, &str)> = batch
            .iter()
            .flat_map(|u| {
                u.install_ids
                    .iter()
                    .map(move |i| (u.external_id.as_str(), i.as_str()))
            })
            .collect();
        let written = match store.user_upsert_many(&users, clock.now()).await {
            Ok(n) => store
                .device_attach_installs(app_id, &installs, clock.now())
                .await
                .map(|_| n),
            Err(e) => Err(e),
        };
        match written {
            Ok(n) => rows.summary.accepted += n,
            Err(source) => {
                return Err(ImportError::Store {
                    source,
                    done: rows.summary.clone(),
                })
            }
        }
    }
    Ok(())
}

/// The pure core of an import: bytes in, checked users out in batches, rejected
/// rows counted. The caller writes `ready` and adds to `summary.accepted`.
pub struct Rows {
    splitter: Splitter,
    sink: Sink,
    /// Full batches waiting to be written (and the last one, once finished).
    pub ready: Vec<Vec<CheckedUser>>,
    pub summary: Summary,
}

impl Rows {
    pub fn new(format: Format) -> Self {
        Self {
            splitter: Splitter::new(format == Format::Csv),
            sink: Sink {
                format,
                header: None,
                header_error: None,
                batch: Vec::new(),
                batch_bytes: 0,
            },
            ready: Vec::new(),
            summary: Summary::default(),
        }
    }

    /// Reads the next chunk of input.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), HeaderError> {
        self.feed(Some(chunk))
    }

    /// Reads the end of the input: its last line, and the last batch.
    pub fn finish(&mut self) -> Result<(), HeaderError> {
        self.feed(None)?;
        if !self.sink.batch.is_empty() {
            self.ready.push(std::mem::take(&mut self.sink.batch));
        }
        Ok(())
    }

    /// Hands a chunk (or, with `None`, the end) to the splitter and its records
    /// to the sink.
    fn feed(&mut self, chunk: Option<&[u8]>) -> Result<(), HeaderError> {
        let Self {
            splitter,
            sink,
            ready,
            summary,
        } = self;
        let mut each = |line, piece: Piece<'_>| sink.take(line, piece, ready, summary);
        match chunk {
            Some(chunk) => splitter.push(chunk, &mut each),
            None => splitter.finish(&mut each),
        }
        self.sink.header_error.take().map_or(Ok(()), Err)
    }
}

/// Turns records into checked users and rejections (the half of [`Rows`] that
/// the splitter's callback may borrow).
struct Sink {
    format: Format,
    header: Option<Header>,
    header_error: Option<HeaderError>,
    batch: Vec<CheckedUser>,
    batch_bytes: usize,
}

impl Sink {
    fn take(
        &mut self,
        line: u64,
        piece: Piece<'_>,
        ready: &mut Vec<Vec<CheckedUser>>,
        summary: &mut Summary,
    ) {
        if self.header_error.is_some() {
            return;
        }
        let record = match piece {
            Piece::Record(r) if r.iter().all(u8::is_ascii_whitespace) => return,
            Piece::Record(r) => Ok(r),
            Piece::TooLong => Err(RowError::field(
                "line",
                format!("longer than {MAX_RECORD} bytes"),
            )),
        };
        let bytes = record.as_ref().map_or(0, |r| r.len());
        let user = match (self.format, &self.header) {
            (Format::Ndjson, _) => record.and_then(parse_ndjson),
            (Format::Csv, Some(header)) => record.and_then(|r| header.user(r)),
            (Format::Csv, None) => {
                match record
                    .map_err(HeaderError::Malformed)
                    .and_then(Header::parse)
                {
                    Ok(h) => self.header = Some(h),
                    Err(e) => self.header_error = Some(e),
                }
                return;
            }
        };
        match user {
            Ok(user) => {
                self.batch_bytes += bytes;
                self.batch.push(user);
                if self.batch.len() >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
                    ready.push(std::mem::take(&mut self.batch));
                    self.batch_bytes = 0;
                }
            }
            Err(e) => {
                summary.rejected += 1;
                if summary.errors.len() < MAX_ERRORS {
                    summary.errors.push(LineError { line, message: e.0 });
                }
            }
        }
    }
}

/// One NDJSON line as a checked user.
pub fn parse_ndjson(line: &[u8]) -> Result<CheckedUser, RowError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        // serde_json ends its message with the position; within one line only
        // the column means anything.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let problem = text.strip_suffix(&suffix).unwrap_or(&text);
        RowError::field("json", format!("{problem} at column {}", e.column()))
    })?;
    let Value::Object(mut fields) = value else {
        return Err(RowError::field("json", "each line must be one object"));
    };
    let external_id = match fields.remove("externalId") {
        Some(Value::String(id)) => id,
        None | Some(Value::Null) => return Err(RowError::field("externalId", "required")),
        Some(_) => return Err(RowError::field("externalId", "expected a string")),
    };
    let body: UserBody = serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.into_inner().to_string();
        // serde lists the PUT body's fields; a line has the id besides.
        match problem.split_once("`, expected ") {
            Some((unknown, expected)) if unknown.starts_with("unknown field `") => RowError::field(
                &path,
                format!("unknown field; expected `externalId` or {expected}"),
            ),
            _ => RowError::field(&path, problem),
        }
    })?;
    Ok(CheckedUser::check("externalId", external_id, body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `input` fed in chunks of `chunk` bytes: (line, user or error).
    fn rows(format: Format, input: &str, chunk: usize) -> (Summary, Vec<CheckedUser>) {
        let mut r = Rows::new(format);
        for piece in input.as_bytes().chunks(chunk) {
            r.push(piece).expect("a good header");
        }
        r.finish().expect("a good header");
        let users = r.ready.concat();
        (r.summary, users)
    }

    fn one_ndjson(line: &str) -> Result<CheckedUser, String> {
        parse_ndjson(line.as_bytes()).map_err(|e| e.to_string())
    }

    fn header_error(input: &str) -> HeaderError {
        let mut r = Rows::new(Format::Csv);
        r.push(input.as_bytes())
            .and_then(|()| r.finish())
            .expect_err("a bad header")
    }

    #[test]
    fn an_ndjson_line_is_checked_like_the_put_body() {
        let u = one_ndjson(
            r#"{"externalId": "u1", "phone": "+49 151 1234-5678", "timezone": "Europe/Berlin",
                "locale": "de-DE", "attributes": {"tier": "gold"}}"#,
        )
        .unwrap();
        assert_eq!(u.external_id, "u1");
        assert_eq!(u.phone.as_deref(), Some("+4915112345678"));
        assert_eq!(u.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(u.attributes, Some(serde_json::json!({"tier": "gold"})));
        let bare = one_ndjson(r#"{"externalId": "u2", "phone": null}"#).unwrap();
        assert_eq!((bare.phone, bare.attributes), (None, None), "absent keeps");
    }

    #[test]
    fn bad_ndjson_lines_name_the_field() {
        let cases = [
            (
                r#"{"externalId": "u1", "phone": "12"}"#,
                "phone: expected an E.164",
            ),
            (
                r#"{"externalId": "u1", "timezone": "Mars/Olympus"}"#,
                "timezone: ",
            ),
            (r#"{"externalId": "u1", "locale": "de DE"}"#, "locale: "),
            (r#"{"phone": "+4915112345678"}"#, "externalId: required"),
            (r#"{"externalId": 7}"#, "externalId: expected a string"),
            (r#"{"externalId": ""}"#, "externalId: must be 1 to 256"),
            (
                r#"{"externalId": "u1", "timezon": "UTC"}"#,
                "timezon: unknown field; expected `externalId` or one of `phone`",
            ),
            (
                r#"{"externalId": "u1", "phone": 49}"#,
                "phone: invalid type: integer `49`",
            ),
            (
                r#"{"externalId": "u1", "attributes": [1]}"#,
                "attributes: invalid type: sequence",
            ),
            (
                r#"{"externalId": "u1", "attributes": {"a": "\u0000"}}"#,
                "attributes: must not contain",
            ),
            (
                r#"{"externalId": "u1", "#,
                "json: EOF while parsing a value at column 21",
            ),
            (r#"[1, 2]"#, "json: each line must be one object"),
            ("not json", "json: expected ident at column 2"),
        ];
        for (line, want) in cases {
            let got = one_ndjson(line).expect_err(line);
            assert!(got.starts_with(want), "{line} → {got:?}, want {want:?}…");
        }
    }

    #[test]
    fn ndjson_rows_count_lines_skip_blanks_and_keep_going() {
        let input = "{\"externalId\": \"a\"}\r\n\n   \n{\"externalId\": \"b\", \"phone\": \"1\"}\n{oops\n{\"externalId\": \"c\"}";
        for chunk in [1, 3, 7, 1000] {
            let (summary, users) = rows(Format::Ndjson, input, chunk);
            let ids: Vec<&str> = users.iter().map(|u| u.external_id.as_str()).collect();
            assert_eq!(ids, ["a", "c"], "chunks of {chunk}");
            assert_eq!(summary.rejected, 2);
            let lines: Vec<u64> = summary.errors.iter().map(|e| e.line).collect();
            assert_eq!(lines, [4, 5], "chunks of {chunk}");
            assert!(summary.errors[0].message.starts_with("phone: "));
            assert!(summary.errors[1].message.starts_with("json: "));
        }
    }

    #[test]
    fn a_line_too_long_is_one_rejected_row() {
        let long = format!("{{\"externalId\": \"{}\"}}", "x".repeat(MAX_RECORD));
        let input = format!("{{\"externalId\": \"a\"}}\n{long}\n{{\"externalId\": \"b\"}}\n");
        for chunk in [4096, MAX_RECORD * 2] {
            let (summary, users) = rows(Format::Ndjson, &input, chunk);
            assert_eq!(users.len(), 2, "chunks of {chunk}");
            assert_eq!(summary.errors.len(), 1);
            assert_eq!(summary.errors[0].line, 2);
            assert!(summary.errors[0].message.starts_with("line: longer than"));
        }
    }

    #[test]
    fn only_the_first_errors_are_listed_but_all_are_counted() {
        let input = "{}\n".repeat(MAX_ERRORS + 5);
        let (summary, _) = rows(Format::Ndjson, &input, 64);
        assert_eq!(summary.rejected, (MAX_ERRORS + 5) as u64);
        assert_eq!(summary.errors.len(), MAX_ERRORS);
        assert_eq!(summary.errors[MAX_ERRORS - 1].line, MAX_ERRORS as u64);
    }

    #[test]
    fn rows_are_batched() {
        let input: String = (0..BATCH_ROWS * 2 + 1)
            .map(|i| format!("{{\"externalId\": \"u{i}\"}}\n"))
            .collect();
        let mut r = Rows::new(Format::Ndjson);
        r.push(input.as_bytes()).unwrap();
        assert_eq!(r.ready.len(), 2, "two full batches while reading");
        r.finish().unwrap();
        let sizes: Vec<usize> = r.ready.iter().map(Vec::len).collect();
        assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 1]);
    }

    #[test]
    fn csv_columns_and_attributes() {
        let input = "\u{feff}external_id, phone ,timezone,locale,tier,city\n\
                     u1,+49 151 12345678,Europe/Berlin,de-DE,gold,Berlin\n\
                     u2,,,,,\n";
        let (summary, users) = rows(Format::Csv, input, 5);
        assert_eq!(summary, Summary::default());
        assert_eq!(users[0].phone.as_deref(), Some("+4915112345678"));
        assert_eq!(users[0].timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(users[0].locale.as_deref(), Some("de-DE"));
        assert_eq!(
            users[0].attributes,
            Some(serde_json::json!({"tier": "gold", "city": "Berlin"}))
        );
        assert_eq!(users[1].phone, None, "an empty cell keeps what is stored");
        assert_eq!(users[1].attributes, Some(serde_json::json!({})));
        let (_, users) = rows(Format::Csv, "phone,external_id\n+4915112345678,u3\n", 64);
        assert_eq!(users[0].external_id, "u3");
        assert_eq!(users[0].attributes, None, "no attribute columns: untouched");
    }

    #[test]
    fn csv_quoted_fields() {
        let input = "external_id,note\r\n\
                     \"u,1\",\"said \"\"hi\"\"\"\r\n\
                     u2,\"two\nlines\"\r\n\
                     u3,\"\"\r\n\
                     u4,bad\"quote\r\n\
                     u5,\"closed\"late\r\n\
                     u6,\"never closed\r\n";
        for chunk in [1, 4, 1000] {
            let (summary, users) = rows(Format::Csv, input, chunk);
            let got: Vec<(&str, Option<&Value>)> = users
                .iter()
                .map(|u| {
                    (
                        u.external_id.as_str(),
                        u.attributes.as_ref().and_then(|a| a.get("note")),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("u,1", Some(&Value::from("said \"hi\""))),
                    ("u2", Some(&Value::from("two\nlines"))),
                    ("u3", None),
                ],
                "chunks of {chunk}"
            );
            let errors: Vec<(u64, &str)> = summary
                .errors
                .iter()
                .map(|e| (e.line, e.message.as_str()))
                .collect();
            assert_eq!(
                errors,
                [
                    (6, "record: field 2: a quote inside an unquoted field"),
                    (7, "record: field 2: 'l' after the closing quote"),
                    (8, "record: field 2: the quote is never closed"),
                ],
                "chunks of {chunk}: a quoted newline counts as a line"
            );
        }
    }

    #[test]
    fn bad_csv_rows_name_the_field() {
        let input = "external_id,phone,timezone,locale\n\
                     u1,12,,\n\
                     u2,,Mars/Olympus,\n\
                     u3,,,de DE\n\
                     ,+4915112345678,,\n\
                     u5,+4915112345678\n\
                     u6,,,,extra\n\
                     u7,,UTC,en\n";
        let (summary, users) = rows(Format::Csv, input, 16);
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].external_id, "u7");
        let errors: Vec<(u64, String)> = summary
            .errors
            .iter()
            .map(|e| (e.line, e.message.split(':').next().unwrap_or("").to_owned()))
            .collect();
        let want = [
            (2, "phone"),
            (3, "timezone"),
            (4, "locale"),
            (5, "external_id"),
            (6, "record"),
            (7, "record"),
        ];
        assert_eq!(
            errors,
            want.map(|(l, f)| (l, f.to_owned())),
            "{:?}",
            summary.errors
        );
        assert!(summary.errors[4]
            .message
            .contains("has 2 fields; the header has 4"));
    }

    #[test]
    fn csv_header_problems_stop_the_import() {
        assert_eq!(
            header_error("phone,locale\n+4915112345678,en\n"),
            HeaderError::NoExternalId
        );
        assert_eq!(
            header_error("external_id,,phone\n"),
            HeaderError::EmptyName(2)
        );
        assert_eq!(
            header_error("external_id,tier,tier\n"),
            HeaderError::Duplicate("tier".into())
        );
        assert!(matches!(
            header_error("external_id,\"tier\n"),
            HeaderError::Malformed(_)
        ));
        assert!(matches!(
            header_error("external_id,\"ti\"er\nu1,x\n"),
            HeaderError::Malformed(_)
        ));
        // A header alone, or nothing at all, imports nothing and is no error.
        assert_eq!(rows(Format::Csv, "external_id\n", 8).0, Summary::default());
        assert_eq!(rows(Format::Csv, "", 8).0, Summary::default());
    }

    #[test]
    fn formats_from_media_types_paths_and_names() {
        assert_eq!(
            Format::from_media_type("application/x-ndjson"),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_media_type("application/jsonl; charset=utf-8"),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_media_type("Text/CSV;header=present"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_media_type("application/json"), None);
        assert_eq!(
            Format::from_path(Path::new("a/users.JSONL")),
            Some(Format::Ndjson)
        );
        assert_eq!(Format::from_path(Path::new("users.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("users.txt")), None);
        assert_eq!(Format::from_path(Path::new("users")), None);
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert!("xml".parse::<Format>().is_err());
    }
}
