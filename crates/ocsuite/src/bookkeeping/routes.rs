//! HTTP handlers under `/api/v1/bookkeeping`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::categorize::Outcome;
use super::import::BankUpload;
use super::summary::FinancialSummary;
use super::{Account, Category, NewTransaction, Rule, Transaction, find_category};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{RuleId, TransactionId};
use crate::imports::Report;
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::{Admin, Member};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(list_transactions, create_transaction))
        .routes(routes!(
            get_transaction,
            update_transaction,
            delete_transaction
        ))
        .routes(routes!(get_categories, put_categories))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(delete_rule))
        .routes(routes!(categorize))
        .routes(routes!(summary))
        .merge(crate::imports::with_upload_limit(
            OpenApiRouter::new().routes(routes!(import)),
        ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountOut {
    #[serde(flatten)]
    pub account: Account,
    /// Opening balance plus every transaction.
    pub balance_minor: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accounts {
    pub accounts: Vec<AccountOut>,
}

/// The company's accounts with their balances.
#[utoipa::path(get, path = "/bookkeeping/accounts", tag = "bookkeeping", responses((status = 200, body = Accounts)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<Accounts>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let mut accounts = Vec::new();
    for a in super::accounts(&mut tx).await? {
        let (sum,): (i64,) = tx
            .fetch_one(
                scoped("SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transactions WHERE tenant_id = $1 AND account_id = $2")
                    .bind(&a.id),
            )
            .await?;
        accounts.push(AccountOut {
            balance_minor: a.opening_balance_minor.saturating_add(sum),
            account: a,
        });
    }
    tx.commit().await?;
    Ok(Json(Accounts { accounts }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    pub name: String,
    /// `bank` (default), `card`, `cash` or `other`.
    pub kind: Option<String>,
    /// ISO 4217 (default: the company's currency).
    pub currency: Option<String>,
    /// Decimal text, the balance before the first transaction recorded here.
    pub opening_balance: Option<String>,
}

/// Adds an account.
#[utoipa::path(post, path = "/bookkeeping/accounts", request_body = AccountIn, tag = "bookkeeping",
    responses((status = 201, body = Account), (status = 422, body = ErrorBody)))]
pub async fn create_account(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(i): ApiJson<AccountIn>,
) -> Result<(StatusCode, Json<Account>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let currency = match &i.currency {
        Some(c) => crate::money::currency(c).map_err(|m| AppError::invalid("currency", m))?,
        None => crate::tenancy::tenants::currency(&mut tx).await?,
    };
    let opening = match &i.opening_balance {
        Some(v) => crate::money::parse(v, &currency)
            .map_err(|m| AppError::invalid("opening_balance", m))?,
        None => 0,
    };
    let id = super::create_account(
        &mut tx,
        &i.name,
        i.kind.as_deref().unwrap_or("bank"),
        &currency,
        opening,
        "manual",
    )
    .await?;
    super::refresh_metrics(&mut tx).await?;
    let a = super::account(&mut tx, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(a)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TxQuery {
    pub account_id: Option<String>,
    /// YYYY-MM-DD, inclusive.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub category: Option<String>,
    /// Only transactions without a category.
    #[serde(default)]
    pub uncategorized: bool,
    /// 1-1000 (default 200).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Transactions {
    pub transactions: Vec<Transaction>,
}

/// Transactions, newest first.
#[utoipa::path(get, path = "/bookkeeping/transactions", params(TxQuery), tag = "bookkeeping",
    responses((status = 200, body = Transactions)))]
pub async fn list_transactions(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<TxQuery>,
) -> Result<Json<Transactions>> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-1000"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let transactions = super::list(
        &mut tx,
        &super::Filter {
            account: q.account_id,
            from: q.from.map(|d| d.to_string()),
            to: q.to.map(|d| d.to_string()),
            category: q.category,
            uncategorized: q.uncategorized,
            limit,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Transactions { transactions }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionIn {
    /// YYYY-MM-DD.
    pub date: NaiveDate,
    /// Signed decimal text in the account's currency (`"-49.99"`); or `amount_minor`.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    /// Must be the account's currency when given.
    pub currency: Option<String>,
    pub counterparty: Option<String>,
    pub memo: Option<String>,
    pub category: Option<String>,
    pub account_id: Option<String>,
}

/// Records a transaction.
#[utoipa::path(post, path = "/bookkeeping/transactions", request_body = TransactionIn, tag = "bookkeeping",
    responses((status = 201, body = Transaction), (status = 422, body = ErrorBody)))]
pub async fn create_transaction(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(i): ApiJson<TransactionIn>,
) -> Result<(StatusCode, Json<Transaction>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let account = super::account_or_default(&mut tx, i.account_id.as_deref()).await?;
    if let Some(c) = &i.currency {
        let c = crate::money::currency(c).map_err(|m| AppError::invalid("currency", m))?;
        if c != account.currency {
            return Err(AppError::invalid(
                "currency",
                format!(
                    "the account {} is in {}, not {c}",
                    account.name, account.currency
                ),
            ));
        }
    }
    let amount = match (&i.amount, i.amount_minor) {
        (Some(a), None) => {
            crate::money::parse(a, &account.currency).map_err(|m| AppError::invalid("amount", m))?
        }
        (None, Some(m)) => m,
        _ => {
            return Err(AppError::invalid(
                "amount",
                "give exactly one of amount (decimal text) or amount_minor",
            ));
        }
    };
    let mut t = NewTransaction::new(i.date, amount, i.counterparty.as_deref(), i.memo.as_deref())?;
    if let Some(c) = &i.category {
        let cats = super::categories(&mut tx).await?;
        t.category = Some(
            find_category(&cats, c)
                .ok_or_else(|| super::unknown_category(c, &cats))?
                .name
                .clone(),
        );
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
    let id = super::insert_one(&mut tx, &account, &t, "manual").await?;
    super::refresh_metrics(&mut tx).await?;
    let saved = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

fn txn_id(id: &str) -> Result<TransactionId> {
    TransactionId::parse(id).ok_or(AppError::NotFound("transaction"))
}

#[utoipa::path(get, path = "/bookkeeping/transactions/{id}", tag = "bookkeeping",
    responses((status = 200, body = Transaction), (status = 404, body = ErrorBody)))]
pub async fn get_transaction(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<Transaction>> {
    let id = txn_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let t = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(t))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryIn {
    /// A category name, or null to clear it.
    pub category: Option<String>,
}

/// Sets a transaction's category by hand (rules and the model never override it).
#[utoipa::path(patch, path = "/bookkeeping/transactions/{id}", request_body = CategoryIn, tag = "bookkeeping",
    responses((status = 200, body = Transaction), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_transaction(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(i): ApiJson<CategoryIn>,
) -> Result<Json<Transaction>> {
    let id = txn_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::get(&mut tx, &id).await?;
    let cats = super::categories(&mut tx).await?;
    let cat = match &i.category {
        Some(c) => Some(
            find_category(&cats, c)
                .ok_or_else(|| super::unknown_category(c, &cats))?
                .name
                .clone(),
        ),
        None => None,
    };
    super::set_category(&mut tx, &id, cat.as_deref(), "manual").await?;
    super::refresh_metrics(&mut tx).await?;
    let t = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(t))
}

#[utoipa::path(delete, path = "/bookkeeping/transactions/{id}", tag = "bookkeeping",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_transaction(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = txn_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !super::delete(&mut tx, &id).await? {
        return Err(AppError::NotFound("transaction"));
    }
    super::refresh_metrics(&mut tx).await?;
    audit::record(
        &mut tx,
        &ctx,
        "transaction.delete",
        "transaction",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Categories {
    pub categories: Vec<Category>,
}

#[utoipa::path(get, path = "/bookkeeping/categories", tag = "bookkeeping", responses((status = 200, body = Categories)))]
pub async fn get_categories(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<Categories>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let categories = super::categories(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Categories { categories }))
}

/// Replaces the category list (admins); a category in use cannot be removed (409).
#[utoipa::path(put, path = "/bookkeeping/categories", request_body = Categories, tag = "bookkeeping",
    responses((status = 200, body = Categories), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_categories(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(i): ApiJson<Categories>,
) -> Result<Json<Categories>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::set_categories(&mut tx, &i.categories).await?;
    super::refresh_metrics(&mut tx).await?;
    audit::record(
        &mut tx,
        &ctx,
        "bookkeeping.categories",
        "categories",
        "categories",
        json!({"count": i.categories.len()}),
    )
    .await?;
    let categories = super::categories(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Categories { categories }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

#[utoipa::path(get, path = "/bookkeeping/rules", tag = "bookkeeping", responses((status = 200, body = Rules)))]
pub async fn list_rules(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Rules>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rules = super::rules(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Rules { rules }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    /// `counterparty`, `memo` or `any` (default).
    pub field: Option<String>,
    /// Matched as a case-insensitive substring.
    pub pattern: String,
    pub category: String,
    /// Lower runs first (default: after the existing rules).
    pub position: Option<i64>,
}

/// Adds a categorisation rule.
#[utoipa::path(post, path = "/bookkeeping/rules", request_body = RuleIn, tag = "bookkeeping",
    responses((status = 201, body = Rule), (status = 422, body = ErrorBody)))]
pub async fn create_rule(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(i): ApiJson<RuleIn>,
) -> Result<(StatusCode, Json<Rule>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let rule = super::add_rule(
        &mut tx,
        i.field.as_deref().unwrap_or("any"),
        &i.pattern,
        &i.category,
        i.position,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(delete, path = "/bookkeeping/rules/{id}", tag = "bookkeeping",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = RuleId::parse(&id).ok_or(AppError::NotFound("rule"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !super::delete_rule(&mut tx, &id).await? {
        return Err(AppError::NotFound("rule"));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategorizeIn {
    #[serde(default)]
    pub transaction_ids: Option<Vec<String>>,
    /// Ask the model for what the rules leave (default true; needs a configured model).
    #[serde(default)]
    pub use_model: Option<bool>,
}

/// Categorises now: rules, then the model for the rest.
#[utoipa::path(post, path = "/bookkeeping/categorize", request_body = CategorizeIn, tag = "bookkeeping",
    responses((status = 200, body = Outcome), (status = 404, body = ErrorBody)))]
pub async fn categorize(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(i): ApiJson<CategorizeIn>,
) -> Result<Json<Outcome>> {
    let ids = match &i.transaction_ids {
        Some(list) => {
            if list.len() > 1000 {
                return Err(AppError::invalid(
                    "transaction_ids",
                    "at most 1000 transactions at once",
                ));
            }
            Some(list.iter().map(|s| txn_id(s)).collect::<Result<Vec<_>>>()?)
        }
        None => None,
    };
    let out = super::categorize::run(
        &state,
        &ctx.tenant_id,
        ids.as_deref(),
        i.use_model.unwrap_or(true),
    )
    .await?;
    Ok(Json(out))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub account: Account,
    pub report: Report,
}

/// Imports a bank CSV export into an account: preview first, then `confirm: true`.
#[utoipa::path(post, path = "/bookkeeping/import", request_body = BankUpload, tag = "bookkeeping",
    responses((status = 200, body = Imported), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(u): ApiJson<BankUpload>,
) -> Result<Json<Imported>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let (account, report) = super::import::run(&mut tx, &u).await?;
    if report.confirmed {
        audit::record(
            &mut tx,
            &ctx,
            "bookkeeping.import",
            "account",
            account.id.as_str(),
            json!({"imported": report.imported, "duplicates": report.duplicates, "errors": report.error_count}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(Imported { account, report }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Default: the company's currency.
    pub currency: Option<String>,
    /// Calendar months covered, 1-36 (default 6).
    pub months: Option<u32>,
    /// Default: today.
    pub as_of: Option<NaiveDate>,
}

/// Revenue, expenses by category, net, burn, runway and month-over-month change.
#[utoipa::path(get, path = "/bookkeeping/summary", params(SummaryQuery), tag = "bookkeeping",
    responses((status = 200, body = FinancialSummary), (status = 422, body = ErrorBody)))]
pub async fn summary(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<FinancialSummary>> {
    let months = q.months.unwrap_or(6);
    if !(1..=36).contains(&months) {
        return Err(AppError::invalid("months", "months must be 1-36"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let currency = match &q.currency {
        Some(c) => crate::money::currency(c).map_err(|m| AppError::invalid("currency", m))?,
        None => crate::tenancy::tenants::currency(&mut tx).await?,
    };
    let s = super::summary::load(
        &mut tx,
        &currency,
        months,
        q.as_of.unwrap_or_else(|| Utc::now().date_naive()),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(s))
}
