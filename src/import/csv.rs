//! CSV rows: the header read once into columns, then each record split (quotes, doubled quotes, embedded line breaks) and checked as a user.

use super::{HeaderError, RowError, MAX_RECORD};
use crate::domain::audience::{CheckedUser, UserBody};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// A CSV column, by its header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Column {
    ExternalId,
    Phone,
    Timezone,
    Locale,
    Attribute(String),
}

/// A CSV header: the meaning of each column, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) columns: Vec<Column>,
}

impl Header {
    /// Names are trimmed and case-sensitive; a UTF-8 byte order mark is dropped.
    pub(super) fn parse(record: &[u8]) -> Result<Self, HeaderError> {
        let record = record.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(record);
        let names = csv_fields(record).map_err(HeaderError::Malformed)?;
        let mut seen = HashSet::new();
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() {
                return Err(HeaderError::EmptyName(i + 1));
            }
            if !seen.insert(name) {
                return Err(HeaderError::Duplicate(name.to_owned()));
            }
            columns.push(match name {
                "external_id" => Column::ExternalId,
                "phone" => Column::Phone,
                "timezone" => Column::Timezone,
                "locale" => Column::Locale,
                other => Column::Attribute(other.to_owned()),
            });
        }
        if !columns.contains(&Column::ExternalId) {
            return Err(HeaderError::NoExternalId);
        }
        Ok(Self { columns })
    }

    /// One CSV record as a checked user.
    pub(super) fn user(&self, record: &[u8]) -> Result<CheckedUser, RowError> {
        let cells = csv_fields(record)?;
        if cells.len() != self.columns.len() {
            return Err(RowError::field(
                "record",
                format!(
                    "has {} fields; the header has {}",
                    cells.len(),
                    self.columns.len()
                ),
            ));
        }
        let has_attributes = self
            .columns
            .iter()
            .any(|c| matches!(c, Column::Attribute(_)));
        let mut external_id = None;
        let mut body = UserBody {
            phone: None,
            timezone: None,
            locale: None,
            attributes: has_attributes.then(Map::new),
            install_ids: None,
        };
        for (column, cell) in self.columns.iter().zip(cells) {
            if cell.is_empty() {
                continue;
            }
            match column {
                Column::ExternalId => external_id = Some(cell),
                Column::Phone => body.phone = Some(cell),
                Column::Timezone => body.timezone = Some(cell),
                Column::Locale => body.locale = Some(cell),
                Column::Attribute(name) => {
                    if let Some(attributes) = body.attributes.as_mut() {
                        attributes.insert(name.clone(), Value::String(cell));
                    }
                }
            }
        }
        let external_id = external_id.ok_or_else(|| RowError::field("external_id", "required"))?;
        Ok(CheckedUser::check("external_id", external_id, body)?)
    }
}

/// The fields of one CSV record (RFC 4180: `"` quotes a field, `""` inside
/// quotes is one quote; a quote anywhere else is an error).
pub(super) fn csv_fields(record: &[u8]) -> Result<Vec<String>, RowError> {
    let text = std::str::from_utf8(record).map_err(|e| {
        RowError::field(
            "record",
            format!("not UTF-8 (byte {})", e.valid_up_to() + 1),
        )
    })?;
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let n = fields.len() + 1;
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(RowError::field(
                            "record",
                            format!("field {n}: the quote is never closed"),
                        ))
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(RowError::field(
                        "record",
                        format!("field {n}: {c:?} after the closing quote"),
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(RowError::field(
                            "record",
                            format!("field {n}: a quote inside an unquoted field"),
                        ))
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// What the splitter hands on: a whole record (without its line end), or the
/// news that one was longer than [`MAX_RECORD`] and was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    Record(&'a [u8]),
    TooLong,
}

/// Where the CSV scan stands within a record: only a newline outside quotes
/// ends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quoting {
    FieldStart,
    Plain,
    Quoted,
    QuoteInQuoted,
}

/// Cuts chunks of input into records: lines, or for CSV lines joined where a
/// quoted field holds a newline. Keeps at most [`MAX_RECORD`] bytes of one.
pub(super) struct Splitter {
    pub(super) csv: bool,
    pub(super) quoting: Quoting,
    /// The unfinished record's bytes so far.
    pub(super) buf: Vec<u8>,
    pub(super) overlong: bool,
    /// The line the unfinished record starts on (1-based).
    pub(super) line: u64,
    /// Newlines inside quotes in the unfinished record.
    pub(super) inner_lines: u64,
}

impl Splitter {
    pub(super) fn new(csv: bool) -> Self {
        Self {
            csv,
            quoting: Quoting::FieldStart,
            buf: Vec::new(),
            overlong: false,
            line: 1,
            inner_lines: 0,
        }
    }

    pub(super) fn push(&mut self, mut chunk: &[u8], each: &mut impl FnMut(u64, Piece<'_>)) {
        while let Some(end) = self.scan(chunk) {
            let record = &chunk[..end];
            if self.buf.is_empty() && !self.overlong && record.len() <= MAX_RECORD {
                self.emit(Some(record), each);
            } else {
                self.keep(record);
                self.emit(None, each);
            }
            chunk = &chunk[end + 1..];
        }
        self.keep(chunk);
    }

    pub(super) fn finish(&mut self, each: &mut impl FnMut(u64, Piece<'_>)) {
        if !self.buf.is_empty() || self.overlong {
            self.emit(None, each);
        }
    }

    /// The index of the newline that ends the current record in `chunk`, if any,
    /// following the quoting over what it scans.
    pub(super) fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        if !self.csv {
            return chunk.iter().position(|&b| b == b'\n');
        }
        for (i, &b) in chunk.iter().enumerate() {
            self.quoting = match (self.quoting, b) {
                (Quoting::Quoted, b'"') => Quoting::QuoteInQuoted,
                (Quoting::Quoted, b'\n') => {
                    self.inner_lines += 1;
                    Quoting::Quoted
                }
                (Quoting::Quoted, _) => Quoting::Quoted,
                (_, b'\n') => {
                    self.quoting = Quoting::FieldStart;
                    return Some(i);
                }
                (Quoting::FieldStart | Quoting::QuoteInQuoted, b'"') => Quoting::Quoted,
                (_, b',') => Quoting::FieldStart,
                _ => Quoting::Plain,
            };
        }
        None
    }

    pub(super) fn keep(&mut self, part: &[u8]) {
        if self.overlong {
            return;
        }
        if self.buf.len() + part.len() > MAX_RECORD {
            self.overlong = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    /// Hands on the finished record: `direct` when it never went through `buf`.
    pub(super) fn emit(&mut self, direct: Option<&[u8]>, each: &mut impl FnMut(u64, Piece<'_>)) {
        let line = self.line;
        self.line += 1 + self.inner_lines;
        self.inner_lines = 0;
        self.quoting = Quoting::FieldStart;
        if std::mem::take(&mut self.overlong) {
            each(line, Piece::TooLong);
        } else {
            let record = direct.unwrap_or(&self.buf);
            each(
                line,
                Piece::Record(record.strip_suffix(b"\r").unwrap_or(record)),
            );
        }
        self.buf.clear();
    }
}
