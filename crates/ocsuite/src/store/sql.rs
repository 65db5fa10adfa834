//! Backend-neutral query text and arguments.
//!
//! A query is written once with `$1, $2 …` parameter markers (both SQLite and PostgreSQL
//! accept them) and carries its arguments as [`Arg`] values, so the caller never learns
//! which backend runs it. Only [`super::Tx`] turns an [`Sql`] into a driver query.

use chrono::{DateTime, Utc};

/// One bound argument.
#[derive(Clone, Debug)]
pub enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
    Bool(bool),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

/// A query: static SQL text plus its arguments, in parameter order.
#[derive(Clone, Debug)]
pub struct Sql {
    pub(super) text: &'static str,
    pub(super) args: Vec<Arg>,
    /// `$1` is the tenant of the transaction that runs it ([`scoped`]).
    pub(super) scoped: bool,
}

/// Starts a query on tables that belong to no tenant. The text must be a literal:
/// dynamic SQL is not supported on purpose.
pub fn sql(text: &'static str) -> Sql {
    Sql {
        text,
        args: Vec::new(),
        scoped: false,
    }
}

/// Starts a query on tenant tables: `$1` is the tenant, bound by the
/// [`super::TenantTx`] that runs it, so no caller fetches or binds a tenant by hand and
/// none can bind the wrong one. The caller's own arguments start at `$2`. Run anywhere
/// but in a tenant transaction, it fails without reaching the database.
pub fn scoped(text: &'static str) -> Sql {
    Sql {
        text,
        args: Vec::new(),
        scoped: true,
    }
}

impl Sql {
    pub fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::OptText(v.map(str::to_owned))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Int(v.into())
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(v.into())
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}
impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::OptFloat(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<Option<Vec<u8>>> for Arg {
    fn from(v: Option<Vec<u8>>) -> Self {
        Arg::OptBytes(v)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(v)
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::OptTime(v)
    }
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::OptInt(v) => q.bind(v),
                Arg::OptFloat(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::OptBytes(v) => q.bind(v),
                Arg::Time(v) => q.bind(v),
                Arg::OptTime(v) => q.bind(v),
            };
        }
        q
    }};
}
pub(super) use bind_all;
