//! CSV imports shared by the modules (leads, bank exports).
//!
//! An import is two calls with the same file: first `confirm: false`, which parses every
//! row and answers what would happen (row-level errors by line, duplicates, a sample);
//! then `confirm: true`, which stores the good rows in one transaction. Nothing is kept
//! between the calls, so an abandoned preview leaves nothing behind, and a confirmed
//! import either stores every good row or none.
//!
//! Columns are matched to fields by an explicit `mapping` (field → header) or, for fields
//! the mapping leaves out, by common header names (`Amount`, `Betrag`…). The delimiter
//! (`,` `;` or tab) is detected from the header line, since European banks export `;`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

/// Largest CSV accepted in one import.
pub const MAX_CSV_BYTES: usize = 8 * 1024 * 1024;

/// The body limit of a CSV import route: a CSV and its options.
pub const UPLOAD_MAX_BYTES: usize = MAX_CSV_BYTES + 64 * 1024;

/// `routes` with the import body limit instead of the server's: a declared
/// `Content-Length` over [`UPLOAD_MAX_BYTES`] is refused before the body is read, and a
/// body that grows past it is cut off.
pub fn with_upload_limit<S: Clone + Send + Sync + 'static>(
    routes: utoipa_axum::router::OpenApiRouter<S>,
) -> utoipa_axum::router::OpenApiRouter<S> {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_MAX_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversize))
}

async fn refuse_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::json::refuse_declared_oversize(UPLOAD_MAX_BYTES, req, next).await
}
/// Most data rows in one import.
pub const MAX_ROWS: usize = 20_000;
/// Errors reported at most (the count is always exact).
const MAX_ERRORS: usize = 500;
/// Parsed rows shown in a preview.
pub const SAMPLE_ROWS: usize = 20;

/// A field a module imports, with the header names recognised for it.
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    pub aliases: &'static [&'static str],
}

/// One problem with one row.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub field: Option<String>,
    pub message: String,
}

/// What an import did, or would do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// False for a preview: nothing was stored.
    pub confirmed: bool,
    pub total_rows: usize,
    /// Rows that parsed and would be (or were) stored.
    pub valid_rows: usize,
    pub imported: usize,
    /// Rows already stored by an earlier import (skipped).
    pub duplicates: usize,
    pub error_count: usize,
    pub errors: Vec<RowError>,
    /// Field → the header it was read from.
    pub mapping: BTreeMap<String, String>,
    /// The first parsed rows, as they would be stored.
    #[schema(value_type = Vec<Object>)]
    pub sample: Vec<serde_json::Value>,
}

/// The body of an import request (the module adds its own fields beside these).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Upload {
    /// The CSV text, header line first.
    pub csv: String,
    /// Field → header name, for headers the defaults do not recognise.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// False (the default): only report what would happen.
    #[serde(default)]
    pub confirm: bool,
}

/// A parsed file: each data row's line number and its mapped fields.
pub struct Parsed {
    pub mapping: BTreeMap<String, String>,
    pub rows: Vec<(u64, BTreeMap<&'static str, String>)>,
    pub errors: Vec<RowError>,
}

impl Parsed {
    pub fn error(&mut self, line: u64, field: Option<&str>, message: impl Into<String>) {
        self.errors.push(RowError {
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    /// The report, keeping at most [`MAX_ERRORS`] errors (ordered by line).
    pub fn report(
        mut self,
        confirmed: bool,
        total: usize,
        valid: usize,
        imported: usize,
        duplicates: usize,
        sample: Vec<serde_json::Value>,
    ) -> Report {
        self.errors.sort_by_key(|e| e.line);
        let error_count = self.errors.len();
        self.errors.truncate(MAX_ERRORS);
        Report {
            confirmed,
            total_rows: total,
            valid_rows: valid,
            imported,
            duplicates,
            error_count,
            errors: self.errors,
            mapping: self.mapping,
            sample,
        }
    }
}

/// The delimiter of a CSV text, judged from its header line (`;`, tab or `,`).
pub fn detect_delimiter(text: &str) -> u8 {
    delimiter(text.lines().next().unwrap_or(""))
}

fn delimiter(header: &str) -> u8 {
    let count = |c: char| header.matches(c).count();
    [(b';', count(';')), (b'\t', count('\t')), (b',', count(','))]
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > 0)
        .map_or(b',', |(d, _)| d)
}

fn norm(h: &str) -> String {
    h.trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The file line a record starts on. The reader reports the position before any blank
/// lines it skipped, so those are counted here.
fn line_of(text: &str, p: &csv::Position) -> u64 {
    let rest = text.get(p.byte() as usize..).unwrap_or("");
    let blank = rest
        .bytes()
        .take_while(|b| *b == b'\n' || *b == b'\r')
        .filter(|b| *b == b'\n')
        .count();
    p.line() + blank as u64
}

/// Reads `csv` and maps its columns to `fields`. A file-level problem (empty, too big,
/// a required field with no column, a mapping naming a missing header) is a 422; a
/// row-level one is in [`Parsed::errors`].
pub fn parse(csv_text: &str, fields: &[Field], given: &BTreeMap<String, String>) -> Result<Parsed> {
    if csv_text.len() > MAX_CSV_BYTES {
        return Err(AppError::invalid(
            "csv",
            format!(
                "the file is larger than {} MiB; split it",
                MAX_CSV_BYTES / 1024 / 1024
            ),
        ));
    }
    let first = csv_text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if first.is_empty() {
        return Err(AppError::invalid(
            "csv",
            "the file is empty; it needs a header line and at least one row",
        ));
    }
    for k in given.keys() {
        if !fields.iter().any(|f| f.name == k) {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(AppError::invalid(
                "mapping",
                format!(
                    "`{k}` is not a field of this import; fields: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter(first))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv_text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| AppError::invalid("csv", format!("the header line cannot be read: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let mut columns: Vec<(&'static str, usize)> = Vec::new();
    let mut mapping = BTreeMap::new();
    for f in fields {
        let idx = match given.get(f.name) {
            Some(h) => Some(headers.iter().position(|x| norm(x) == norm(h)).ok_or_else(|| {
                AppError::invalid(
                    "mapping",
                    format!("mapping for `{}` names the column `{h}`, which the file does not have; its columns: {}", f.name, headers.join(", ")),
                )
            })?),
            None => headers.iter().position(|x| {
                let n = norm(x);
                n == norm(f.name) || f.aliases.iter().any(|a| norm(a) == n)
            }),
        };
        match idx {
            Some(i) => {
                columns.push((f.name, i));
                mapping.insert(f.name.to_owned(), headers[i].clone());
            }
            None if f.required => {
                return Err(AppError::invalid(
                    "mapping",
                    format!(
                        "no column for the required field `{}`; map it with \"mapping\": {{\"{}\": \"<your column>\"}}; the file's columns: {}",
                        f.name,
                        f.name,
                        headers.join(", ")
                    ),
                ));
            }
            None => {}
        }
    }
    let mut parsed = Parsed {
        mapping,
        rows: Vec::new(),
        errors: Vec::new(),
    };
    for rec in reader.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                parsed.error(line, None, format!("unreadable row: {e}"));
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| line_of(csv_text, p));
        if rec.iter().all(str::is_empty) {
            continue;
        }
        if parsed.rows.len() + parsed.errors.len() >= MAX_ROWS {
            return Err(AppError::invalid(
                "csv",
                format!("the file has more than {MAX_ROWS} rows; split it"),
            ));
        }
        let mut row = BTreeMap::new();
        for (name, i) in &columns {
            if let Some(v) = rec.get(*i).filter(|v| !v.is_empty()) {
                row.insert(*name, v.to_owned());
            }
        }
        parsed.rows.push((line, row));
    }
    if parsed.rows.is_empty() && parsed.errors.is_empty() {
        return Err(AppError::invalid(
            "csv",
            "the file has a header line but no rows",
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field {
            name: "date",
            required: true,
            aliases: &["Booking date", "Datum"],
        },
        Field {
            name: "amount",
            required: true,
            aliases: &["Betrag"],
        },
        Field {
            name: "description",
            required: false,
            aliases: &["Text"],
        },
    ];

    #[test]
    fn maps_by_alias_or_explicitly_and_numbers_lines() {
        let p = parse(
            "Datum;Betrag;Text\n2026-01-02;-12,50;Coffee\n\n2026-01-03;100;\n",
            FIELDS,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(p.mapping["date"], "Datum");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].0, 2);
        assert_eq!(p.rows[1].0, 4);
        assert_eq!(p.rows[0].1["amount"], "-12,50");
        assert!(!p.rows[1].1.contains_key("description"));

        let mut m = BTreeMap::new();
        m.insert("amount".to_owned(), "Value".to_owned());
        let p = parse("date,Value\n2026-01-02,5\n", FIELDS, &m).unwrap();
        assert_eq!(p.rows[0].1["amount"], "5");

        let e = parse("date,Value\n2026-01-02,5\n", FIELDS, &BTreeMap::new())
            .err()
            .unwrap();
        assert!(e.to_string().contains("`amount`"), "{e}");
        m.insert("amount".to_owned(), "Nope".to_owned());
        assert!(parse("date,Value\n1,2\n", FIELDS, &m).is_err());
        assert!(parse("", FIELDS, &BTreeMap::new()).is_err());
        assert!(parse("date,amount\n", FIELDS, &BTreeMap::new()).is_err());
    }
}
