//! Bookkeeping: accounts, transactions, categories and categorisation rules.
//!
//! Every amount is signed minor units of its account's currency (money in positive), so
//! sums are exact. A transaction carries a fingerprint (account, date, amount,
//! description, and which occurrence of that combination it is), which is how a bank
//! export imported twice, or a transaction typed in and then imported, is recognised as
//! a duplicate ([`import`]). Categories are `income`, `expense` or `transfer`; transfers
//! move cash between accounts and count in neither revenue nor expenses ([`summary`]).
//! Rules categorise first; the model, when one is configured, suggests the rest
//! ([`categorize`]).

pub mod categorize;
pub mod import;
pub mod module;
pub mod routes;
mod rules;
pub mod summary;

pub use rules::{Rule, add_rule, delete_rule, rules};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AppError, Result};
use crate::ids::{AccountId, TransactionId};
use crate::store::{TenantTx, scoped};

pub const MAX_TEXT: usize = 500;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Account {
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub id: AccountId,
    pub name: String,
    /// `bank`, `card`, `cash` or `other`.
    pub kind: String,
    pub currency: String,
    pub opening_balance_minor: i64,
    pub origin: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Transaction {
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub id: TransactionId,
    pub account_id: String,
    /// YYYY-MM-DD.
    pub booked_on: String,
    /// Signed minor units: money in is positive.
    pub amount_minor: i64,
    pub currency: String,
    pub counterparty: Option<String>,
    pub memo: Option<String>,
    pub category: Option<String>,
    /// `rule`, `model` or `manual`.
    pub categorized_by: Option<String>,
    /// `manual`, `import`, `demo`, or `task:<task id>` for one a task recorded.
    pub origin: String,
    pub created_at: DateTime<Utc>,
}

macro_rules! select_transactions {
    ($tail:literal) => {
        concat!(
            "SELECT id, account_id, booked_on, amount_minor, currency, counterparty, memo, category, \
             categorized_by, origin, created_at FROM transactions ",
            $tail
        )
    };
}
pub(crate) use select_transactions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CategoryKind {
    Income,
    Expense,
    Transfer,
}

impl CategoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Income => "income",
            Self::Expense => "expense",
            Self::Transfer => "transfer",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "income" => Self::Income,
            "transfer" => Self::Transfer,
            _ => Self::Expense,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    pub kind: CategoryKind,
}

/// The categories a tenant starts with.
pub fn default_categories() -> Vec<Category> {
    use CategoryKind::{Expense, Income, Transfer};
    [
        ("Sales", Income),
        ("Other income", Income),
        ("Payroll", Expense),
        ("Contractors", Expense),
        ("Rent", Expense),
        ("Software", Expense),
        ("Marketing", Expense),
        ("Travel", Expense),
        ("Meals", Expense),
        ("Professional services", Expense),
        ("Bank fees", Expense),
        ("Taxes", Expense),
        ("Office", Expense),
        ("Other expenses", Expense),
        ("Transfer", Transfer),
    ]
    .into_iter()
    .map(|(n, kind)| Category {
        name: n.into(),
        kind,
    })
    .collect()
}

pub async fn categories(tx: &mut TenantTx) -> Result<Vec<Category>> {
    let rows: Vec<(String, String)> = tx
        .fetch_all(scoped(
            "SELECT name, kind FROM categories WHERE tenant_id = $1 ORDER BY kind, name",
        ))
        .await?;
    if rows.is_empty() {
        return Ok(default_categories());
    }
    Ok(rows
        .into_iter()
        .map(|(name, kind)| Category {
            name,
            kind: CategoryKind::parse(&kind),
        })
        .collect())
}

/// Replaces the category list. A category still used by transactions or rules cannot
/// be removed (409).
pub async fn set_categories(tx: &mut TenantTx, list: &[Category]) -> Result<()> {
    if list.is_empty() || list.len() > 100 {
        return Err(AppError::invalid("categories", "give 1-100 categories"));
    }
    let mut seen = std::collections::HashSet::new();
    for c in list {
        let n = c.name.trim();
        if n.is_empty() || n.chars().count() > 60 || !seen.insert(n.to_lowercase()) {
            return Err(AppError::invalid(
                "categories",
                format!("category `{n}`: names are 1-60 characters and unique"),
            ));
        }
    }
    let used: Vec<(String,)> = tx
        .fetch_all(scoped(
            "SELECT category FROM transactions WHERE tenant_id = $1 AND category IS NOT NULL \
                 UNION SELECT category FROM category_rules WHERE tenant_id = $1",
        ))
        .await?;
    for (u,) in used {
        if !list.iter().any(|c| c.name.trim() == u) {
            return Err(AppError::Conflict(format!(
                "category `{u}` is used by transactions or rules; recategorise them before removing it"
            )));
        }
    }
    tx.execute(scoped("DELETE FROM categories WHERE tenant_id = $1"))
        .await?;
    for c in list {
        tx.execute(
            scoped("INSERT INTO categories (tenant_id, name, kind) VALUES ($1, $2, $3)")
                .bind(c.name.trim())
                .bind(c.kind.as_str()),
        )
        .await?;
    }
    Ok(())
}

/// The category named `name` (any case), as the tenant spells it.
pub fn find_category<'a>(list: &'a [Category], name: &str) -> Option<&'a Category> {
    let n = name.trim().to_lowercase();
    list.iter().find(|c| c.name.to_lowercase() == n)
}

pub fn unknown_category(name: &str, list: &[Category]) -> AppError {
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    AppError::invalid(
        "category",
        format!(
            "`{name}` is not a category; categories: {}",
            names.join(", ")
        ),
    )
}

pub async fn accounts(tx: &mut TenantTx) -> Result<Vec<Account>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT id, name, kind, currency, opening_balance_minor, origin, created_at FROM accounts \
                 WHERE tenant_id = $1 ORDER BY created_at, id"),
        )
        .await?)
}

pub async fn account(tx: &mut TenantTx, id: &AccountId) -> Result<Account> {
    tx.fetch_optional(
        scoped("SELECT id, name, kind, currency, opening_balance_minor, origin, created_at FROM accounts \
             WHERE tenant_id = $1 AND id = $2")
            .bind(id),
    )
    .await?
    .ok_or(AppError::NotFound("account"))
}

/// The account a transaction goes to: the one named, or the tenant's only account, or
/// a new "Main account" in the tenant's currency when it has none.
pub async fn account_or_default(tx: &mut TenantTx, id: Option<&str>) -> Result<Account> {
    if let Some(id) = id {
        let id = AccountId::parse(id).ok_or(AppError::NotFound("account"))?;
        return account(tx, &id).await;
    }
    let all = accounts(tx).await?;
    match all.len() {
        0 => {
            let currency = crate::tenancy::tenants::currency(tx).await?;
            let id = create_account(tx, "Main account", "bank", &currency, 0, "manual").await?;
            account(tx, &id).await
        }
        1 => Ok(all
            .into_iter()
            .next()
            .ok_or(AppError::NotFound("account"))?),
        _ => Err(AppError::invalid(
            "account_id",
            "this company has several accounts; say which one with account_id",
        )),
    }
}

pub async fn create_account(
    tx: &mut TenantTx,
    name: &str,
    kind: &str,
    currency: &str,
    opening_balance_minor: i64,
    origin: &str,
) -> Result<AccountId> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::invalid(
            "name",
            "an account needs a name of 1-100 characters",
        ));
    }
    if !["bank", "card", "cash", "other"].contains(&kind) {
        return Err(AppError::invalid(
            "kind",
            "kind is bank, card, cash or other",
        ));
    }
    crate::money::check_limit("opening_balance", opening_balance_minor)?;
    let id = AccountId::new();
    tx.execute(
        scoped("INSERT INTO accounts (tenant_id, id, name, kind, currency, opening_balance_minor, origin, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&id)
            .bind(name)
            .bind(kind)
            .bind(currency)
            .bind(opening_balance_minor)
            .bind(origin)
            .bind(Utc::now()),
    )
    .await?;
    Ok(id)
}

fn clean(v: Option<&str>, field: &'static str) -> Result<Option<String>> {
    let v = v
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty());
    if v.as_deref()
        .is_some_and(|s| s.chars().count() > MAX_TEXT || s.chars().any(char::is_control))
    {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most {MAX_TEXT} characters, without control characters"),
        ));
    }
    Ok(v)
}

/// A transaction ready to store: checked, with its fingerprint's base.
#[derive(Clone, Debug)]
pub struct NewTransaction {
    pub booked_on: NaiveDate,
    pub amount_minor: i64,
    pub counterparty: Option<String>,
    pub memo: Option<String>,
    pub category: Option<String>,
    pub categorized_by: Option<&'static str>,
}

impl NewTransaction {
    pub fn new(
        booked_on: NaiveDate,
        amount_minor: i64,
        counterparty: Option<&str>,
        memo: Option<&str>,
    ) -> Result<Self> {
        if amount_minor == 0 {
            return Err(AppError::invalid(
                "amount",
                "an amount of zero is not a transaction",
            ));
        }
        Ok(Self {
            booked_on,
            amount_minor: crate::money::check_limit("amount", amount_minor)?,
            counterparty: clean(counterparty, "counterparty")?,
            memo: clean(memo, "memo")?,
            category: None,
            categorized_by: None,
        })
    }

    /// Identifies "the same bank line": account, date, amount and description, without
    /// case or spacing differences.
    pub fn fingerprint_base(&self, account: &AccountId) -> String {
        let desc = format!(
            "{} {}",
            self.counterparty.as_deref().unwrap_or(""),
            self.memo.as_deref().unwrap_or("")
        )
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
        let mut h = Sha256::new();
        h.update(format!(
            "{account}|{}|{}|{desc}",
            self.booked_on, self.amount_minor
        ));
        hex::encode(&h.finalize()[..16])
    }
}

/// Parses `YYYY-MM-DD` (also `DD.MM.YYYY`, `DD/MM/YYYY` and `MM/DD/YYYY` when
/// `format` says so).
pub fn parse_date(v: &str, format: Option<&str>) -> std::result::Result<NaiveDate, String> {
    let fmt = date_pattern(format)?;
    NaiveDate::parse_from_str(v.trim(), fmt).map_err(|_| {
        format!(
            "`{}` is not a date in the format {}",
            v.trim(),
            format.unwrap_or("YYYY-MM-DD")
        )
    })
}

/// The chrono pattern for a date format a person names.
pub fn date_pattern(format: Option<&str>) -> std::result::Result<&'static str, String> {
    Ok(match format.unwrap_or("YYYY-MM-DD") {
        "YYYY-MM-DD" => "%Y-%m-%d",
        "DD.MM.YYYY" => "%d.%m.%Y",
        "DD/MM/YYYY" => "%d/%m/%Y",
        "MM/DD/YYYY" => "%m/%d/%Y",
        "YYYY/MM/DD" => "%Y/%m/%d",
        other => {
            return Err(format!(
                "date_format `{other}` is not supported; use YYYY-MM-DD, DD.MM.YYYY, DD/MM/YYYY, MM/DD/YYYY or YYYY/MM/DD"
            ));
        }
    })
}

/// Stores `t` in `account` as occurrence `n` of its fingerprint.
pub async fn insert(
    tx: &mut TenantTx,
    account: &Account,
    t: &NewTransaction,
    fingerprint: &str,
    origin: &str,
) -> Result<TransactionId> {
    let id = TransactionId::new();
    tx.execute(
        scoped("INSERT INTO transactions (tenant_id, id, account_id, booked_on, amount_minor, currency, counterparty, memo, \
             category, categorized_by, fingerprint, origin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(&id)
            .bind(&account.id)
            .bind(t.booked_on.to_string())
            .bind(t.amount_minor)
            .bind(&account.currency)
            .bind(t.counterparty.clone())
            .bind(t.memo.clone())
            .bind(t.category.clone())
            .bind(t.categorized_by)
            .bind(fingerprint)
            .bind(origin)
            .bind(Utc::now()),
    )
    .await?;
    Ok(id)
}

/// Stores a single transaction (typed in, or from a task), numbering it after any
/// identical one already there.
pub async fn insert_one(
    tx: &mut TenantTx,
    account: &Account,
    t: &NewTransaction,
    origin: &str,
) -> Result<TransactionId> {
    let base = t.fingerprint_base(&account.id);
    let (n,): (i64,) = tx
        .fetch_one(
            scoped(
                "SELECT COUNT(*) FROM transactions WHERE tenant_id = $1 AND fingerprint LIKE $2",
            )
            .bind(format!("{base}:%")),
        )
        .await?;
    insert(tx, account, t, &format!("{base}:{}", n + 1), origin).await
}

pub async fn get(tx: &mut TenantTx, id: &TransactionId) -> Result<Transaction> {
    tx.fetch_optional(scoped(select_transactions!("WHERE tenant_id = $1 AND id = $2")).bind(id))
        .await?
        .ok_or(AppError::NotFound("transaction"))
}

/// Filters for listing transactions.
#[derive(Default)]
pub struct Filter {
    pub account: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub category: Option<String>,
    pub uncategorized: bool,
    pub limit: i64,
}

/// Transactions, newest first.
pub async fn list(tx: &mut TenantTx, f: &Filter) -> Result<Vec<Transaction>> {
    Ok(tx
        .fetch_all(
            scoped(select_transactions!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR account_id = $2) AND ($3 IS NULL OR booked_on >= $3) \
                 AND ($4 IS NULL OR booked_on <= $4) AND ($5 IS NULL OR category = $5) AND ($6 = FALSE OR category IS NULL) \
                 ORDER BY booked_on DESC, id DESC LIMIT $7"
            ))
            .bind(f.account.clone())
            .bind(f.from.clone())
            .bind(f.to.clone())
            .bind(f.category.clone())
            .bind(f.uncategorized)
            .bind(f.limit),
        )
        .await?)
}

/// Sets (or clears) a transaction's category, recording who decided it.
pub async fn set_category(
    tx: &mut TenantTx,
    id: &TransactionId,
    category: Option<&str>,
    by: &'static str,
) -> Result<bool> {
    Ok(tx
        .execute(
            scoped("UPDATE transactions SET category = $2, categorized_by = $3 WHERE tenant_id = $1 AND id = $4")
                .bind(category)
                .bind(category.map(|_| by))
                .bind(id),
        )
        .await?
        > 0)
}

pub async fn delete(tx: &mut TenantTx, id: &TransactionId) -> Result<bool> {
    Ok(tx
        .execute(scoped("DELETE FROM transactions WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?
        > 0)
}

/// Recomputes and stores the finance metric snapshot.
pub async fn refresh_metrics(tx: &mut TenantTx) -> Result<()> {
    let currency = crate::tenancy::tenants::currency(tx).await?;
    let s = summary::load(tx, &currency, 6, Utc::now().date_naive()).await?;
    crate::metrics::store(tx, "bookkeeping", &summary::metrics(&s)).await
}
