//! A row of any table as JSON, for exports: each column by the type the database
//! reports (text, integers, reals, booleans, times as RFC 3339, bytes as base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, FromRow, Row, TypeInfo, ValueRef};

/// Column name → value.
pub struct JsonRow(pub Map<String, Value>);

impl<'r> FromRow<'r, SqliteRow> for JsonRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let mut m = Map::new();
        for (i, c) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            let v = if raw.is_null() {
                Value::Null
            } else {
                match raw.type_info().name() {
                    "INTEGER" if c.type_info().name() == "BOOLEAN" => {
                        Value::from(row.try_get::<i64, _>(i)? != 0)
                    }
                    "INTEGER" => Value::from(row.try_get::<i64, _>(i)?),
                    "REAL" => Value::from(row.try_get::<f64, _>(i)?),
                    "BLOB" => Value::from(B64.encode(row.try_get::<Vec<u8>, _>(i)?)),
                    _ => Value::from(row.try_get::<String, _>(i)?),
                }
            };
            m.insert(c.name().to_owned(), v);
        }
        Ok(Self(m))
    }
}

impl<'r> FromRow<'r, PgRow> for JsonRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let mut m = Map::new();
        for (i, c) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            let v = if raw.is_null() {
                Value::Null
            } else {
                match c.type_info().name() {
                    "INT8" => Value::from(row.try_get::<i64, _>(i)?),
                    "INT4" => Value::from(row.try_get::<i32, _>(i)?),
                    "INT2" => Value::from(row.try_get::<i16, _>(i)?),
                    "FLOAT8" => Value::from(row.try_get::<f64, _>(i)?),
                    "FLOAT4" => Value::from(row.try_get::<f32, _>(i)?),
                    "BOOL" => Value::from(row.try_get::<bool, _>(i)?),
                    "BYTEA" => Value::from(B64.encode(row.try_get::<Vec<u8>, _>(i)?)),
                    "TIMESTAMPTZ" => Value::from(
                        row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?
                            .to_rfc3339(),
                    ),
                    _ => Value::from(row.try_get::<String, _>(i)?),
                }
            };
            m.insert(c.name().to_owned(), v);
        }
        Ok(Self(m))
    }
}
