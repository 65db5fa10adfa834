//! One integration-test binary: the real server over HTTP, on SQLite and PostgreSQL.

mod helpers;

mod auth;
mod crypto;
mod isolation;
mod ops;
mod postgres;
mod tenancy;
