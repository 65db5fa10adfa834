//! `bookkeeping`: the books as capabilities: record a transaction, categorise, and read
//! the financial summary (the CFO's burn and runway).

use chrono::{NaiveDate, Utc};
use ocsuite_module_sdk::{
    ModuleManifest, SideEffect, TaskError, TaskExecutionRequest, TaskExecutionResult, Undo, Version,
};
use serde_json::{Value, json};

use super::{NewTransaction, find_category};
use crate::error::AppError;
use crate::ids::TransactionId;
use crate::modules::{ExecContext, Module, capability};
use crate::store::scoped;
use futures_util::future::BoxFuture;

pub struct Bookkeeping {
    manifest: ModuleManifest,
}

impl Bookkeeping {
    pub fn new() -> Self {
        let text = |max: u32| json!({"type": "string", "maxLength": max});
        let date = json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"});
        let mut categorize = capability(
            "bookkeeping.categorize",
            "Categorise transactions",
            "Applies the company's rules to uncategorised transactions (or the ones named), then asks the model for the rest when allowed.",
            SideEffect::Write,
            Undo::Instructions {
                text: "Set the category of the affected transactions back by hand in Bookkeeping."
                    .into(),
            },
            json!({
                "type": "object",
                "properties": {
                    "transaction_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                    "use_model": {"type": "boolean"}
                },
                "additionalProperties": false
            }),
            json!({"type": "object", "required": ["considered", "by_rule", "by_model", "remaining"]}),
        );
        categorize.timeout_secs = 180;
        let manifest = ModuleManifest {
            name: "bookkeeping".into(),
            version: Version::new(1, 0, 0),
            description: "The company's books: transactions, categories, revenue, burn and runway."
                .into(),
            capabilities: vec![
                capability(
                    "bookkeeping.add_transaction",
                    "Record a transaction",
                    "Records one transaction (money in positive, out negative) in an account of the company.",
                    SideEffect::Write,
                    Undo::Capability {
                        capability: "bookkeeping.remove_transaction".into(),
                    },
                    json!({
                        "type": "object",
                        "required": ["date", "amount"],
                        "properties": {
                            "date": date,
                            "amount": {"type": "string", "maxLength": 30, "description": "signed decimal, e.g. \"-49.99\""},
                            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                            "counterparty": text(500), "memo": text(500), "category": text(60),
                            "account_id": {"type": "string"}
                        },
                        "additionalProperties": false
                    }),
                    json!({
                        "type": "object",
                        "required": ["transaction_id", "account_id", "booked_on", "amount_minor", "currency"],
                        "properties": {
                            "transaction_id": {"type": "string"}, "account_id": {"type": "string"},
                            "booked_on": {"type": "string"}, "amount_minor": {"type": "integer"},
                            "currency": {"type": "string"}, "category": {"type": ["string", "null"]}
                        }
                    }),
                ),
                capability(
                    "bookkeeping.remove_transaction",
                    "Remove a transaction",
                    "Deletes one transaction (the undo of add_transaction).",
                    SideEffect::Write,
                    Undo::Instructions {
                        text: "Record the transaction again from the task's input.".into(),
                    },
                    json!({"type": "object", "required": ["transaction_id"], "properties": {"transaction_id": {"type": "string"}}}),
                    json!({"type": "object", "required": ["transaction_id", "removed"], "properties": {"transaction_id": {"type": "string"}, "removed": {"type": "boolean"}}}),
                ),
                categorize,
                capability(
                    "bookkeeping.financial_summary",
                    "Financial summary",
                    "Revenue, expenses by category, net, monthly burn, runway from the cash balance, and month-over-month change.",
                    SideEffect::Read,
                    Undo::None,
                    json!({
                        "type": "object",
                        "properties": {
                            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                            "months": {"type": "integer", "minimum": 1, "maximum": 36},
                            "as_of": date
                        },
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["currency", "revenue_minor", "expenses_minor", "net_minor", "cash_balance_minor", "monthly_burn_minor"]}),
                ),
            ],
        };
        Self { manifest }
    }
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Self::new()
    }
}

fn permanent(e: impl std::fmt::Display) -> TaskError {
    TaskError::Permanent(e.to_string())
}

async fn add(ctx: &ExecContext, i: &Value, task: &str) -> Result<TaskExecutionResult, TaskError> {
    let mut tx = ctx.tx().await?;
    // `origin` names the task, so an attempt that committed but was not recorded (a
    // worker lost mid-settle) is found again rather than booked twice.
    let origin = format!("task:{task}");
    let account = super::account_or_default(&mut tx, i["account_id"].as_str()).await?;
    if let Some(c) = i["currency"].as_str()
        && !c.eq_ignore_ascii_case(&account.currency)
    {
        return Err(permanent(format!(
            "currency {c} does not match the account's {}",
            account.currency
        )));
    }
    let date = NaiveDate::parse_from_str(i["date"].as_str().unwrap_or_default(), "%Y-%m-%d")
        .map_err(|e| permanent(format!("date: {e}")))?;
    let amount = crate::money::parse(i["amount"].as_str().unwrap_or_default(), &account.currency)
        .map_err(|m| permanent(format!("amount: {m}")))?;
    let mut t = NewTransaction::new(date, amount, i["counterparty"].as_str(), i["memo"].as_str())?;
    if let Some(c) = i["category"].as_str() {
        let cats = super::categories(&mut tx).await?;
        let cat = find_category(&cats, c)
            .ok_or_else(|| TaskError::from(super::unknown_category(c, &cats)))?;
        t.category = Some(cat.name.clone());
        t.categorized_by = Some("manual");
    } else {
        let rules = super::rules(&mut tx).await?;
        if let Some(c) =
            super::categorize::rule_for(&rules, t.counterparty.as_deref(), t.memo.as_deref())
        {
            t.category = Some(c.to_owned());
            t.categorized_by = Some("rule");
        }
    }
    let earlier: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT id FROM transactions WHERE tenant_id = $1 AND origin = $2")
                .bind(&origin),
        )
        .await
        .map_err(AppError::from)?;
    let id = match earlier.and_then(|(id,)| TransactionId::parse(&id)) {
        Some(id) => id,
        None => super::insert_one(&mut tx, &account, &t, &origin).await?,
    };
    super::refresh_metrics(&mut tx).await?;
    let saved = super::get(&mut tx, &id).await?;
    tx.commit().await.map_err(AppError::from)?;
    Ok(TaskExecutionResult {
        summary: Some(format!(
            "recorded {} {} on {}",
            crate::money::format(saved.amount_minor, &saved.currency),
            saved.currency,
            saved.booked_on
        )),
        output: json!({
            "transaction_id": saved.id, "account_id": saved.account_id, "booked_on": saved.booked_on,
            "amount_minor": saved.amount_minor, "currency": saved.currency, "category": saved.category
        }),
    })
}

async fn run(
    ctx: ExecContext,
    req: TaskExecutionRequest,
) -> Result<TaskExecutionResult, TaskError> {
    let i = &req.input;
    match req.capability.as_str() {
        "bookkeeping.add_transaction" => add(&ctx, i, &req.task_id).await,
        "bookkeeping.remove_transaction" => {
            let mut tx = ctx.tx().await?;
            let removed = match i["transaction_id"].as_str().and_then(TransactionId::parse) {
                Some(id) => super::delete(&mut tx, &id).await?,
                None => false,
            };
            if removed {
                super::refresh_metrics(&mut tx).await?;
            }
            tx.commit().await.map_err(AppError::from)?;
            Ok(TaskExecutionResult::new(
                json!({"transaction_id": i["transaction_id"], "removed": removed}),
            ))
        }
        "bookkeeping.categorize" => {
            let ids: Option<Vec<TransactionId>> = i["transaction_ids"].as_array().map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(TransactionId::parse))
                    .collect()
            });
            let use_model = i["use_model"].as_bool().unwrap_or(true);
            ctx.progress.report(10, "applying rules");
            let out =
                super::categorize::run(&ctx.app, &ctx.tenant, ids.as_deref(), use_model).await?;
            Ok(TaskExecutionResult {
                summary: Some(format!(
                    "{} by rule, {} by the model, {} left uncategorised",
                    out.by_rule, out.by_model, out.remaining
                )),
                output: serde_json::to_value(&out).map_err(permanent)?,
            })
        }
        "bookkeeping.financial_summary" => {
            let mut tx = ctx.tx().await?;
            let currency = match i["currency"].as_str() {
                Some(c) => crate::money::currency(c).map_err(permanent)?,
                None => crate::tenancy::tenants::currency(&mut tx).await?,
            };
            let as_of = match i["as_of"].as_str() {
                Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|e| permanent(format!("as_of: {e}")))?,
                None => Utc::now().date_naive(),
            };
            let months = i["months"].as_u64().unwrap_or(6).clamp(1, 36) as u32;
            let s = super::summary::load(&mut tx, &currency, months, as_of).await?;
            tx.commit().await.map_err(AppError::from)?;
            let c = &s.currency;
            Ok(TaskExecutionResult {
                summary: Some(format!(
                    "cash {} {c}, burn {} {c}/month, runway {}",
                    crate::money::format(s.cash_balance_minor, c),
                    crate::money::format(s.monthly_burn_minor, c),
                    s.runway_months
                        .map_or_else(|| "not burning".to_owned(), |r| format!("{r} months"))
                )),
                output: serde_json::to_value(&s).map_err(permanent)?,
            })
        }
        other => Err(permanent(format!("bookkeeping has no capability {other}"))),
    }
}

impl Module for Bookkeeping {
    fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, Result<TaskExecutionResult, TaskError>> {
        Box::pin(run(ctx, req))
    }
}
