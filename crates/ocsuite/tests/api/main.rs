//! One integration-test binary: the real server over HTTP, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod helpers;
mod house;

mod alerts;
mod approvals;
mod auth;
mod board;
mod bookkeeping;
mod chat;
mod connectors;
mod console;
mod crypto;
mod deletion;
mod demo;
mod email;
mod email_gmail;
mod eval;
mod fake_idp;
mod flags;
mod isolation;
mod knowledge;
mod leadtracker;
mod llm;
mod mcp;
mod oidc;
mod openapi;
mod ops;
mod owner_invites;
mod plans;
mod postgres;
mod queue;
mod realtime;
mod sql_scope;
mod store;
mod support;
mod tasks;
mod tenancy;
mod tools;
mod trigger_events;
mod trigger_metrics;
mod trigger_schedules;
mod triggers;
mod usage;
mod web;
mod webhooks;
