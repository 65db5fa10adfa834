//! Importing a bank's CSV export into one account.
//!
//! Banks differ: one signed amount column or separate debit and credit columns, `,` or
//! `;` between fields, `.` or `,` before the cents, ISO or local dates. The mapping,
//! `date_format` and `decimal_separator` cover these; the defaults follow the file
//! (`;`-separated files default to a decimal comma). A row already in the account (same
//! date, amount and description, counted by occurrence) is a duplicate and is skipped.
//! Imported rows go through the tenant's rules at once.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::json;

use super::{Account, NewTransaction, find_category, parse_date};
use crate::error::{AppError, Result};
use crate::imports::{self, Field, Report};
use crate::store::{TenantTx, scoped};

pub const FIELDS: &[Field] = &[
    Field {
        name: "date",
        required: true,
        aliases: &[
            "booking date",
            "transaction date",
            "posted",
            "posting date",
            "value date",
            "datum",
            "buchungstag",
        ],
    },
    Field {
        name: "amount",
        required: false,
        aliases: &["betrag", "value", "transaction amount"],
    },
    Field {
        name: "debit",
        required: false,
        aliases: &["withdrawal", "withdrawals", "money out", "paid out", "out"],
    },
    Field {
        name: "credit",
        required: false,
        aliases: &["deposit", "deposits", "money in", "paid in", "in"],
    },
    Field {
        name: "counterparty",
        required: false,
        aliases: &["payee", "merchant", "beneficiary", "name", "payer"],
    },
    Field {
        name: "description",
        required: false,
        aliases: &[
            "details",
            "memo",
            "narrative",
            "text",
            "reference",
            "verwendungszweck",
            "transaction details",
        ],
    },
    Field {
        name: "currency",
        required: false,
        aliases: &["curr", "währung"],
    },
    Field {
        name: "category",
        required: false,
        aliases: &[],
    },
];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankUpload {
    pub csv: String,
    /// The account the rows belong to (default: the only account, created if none).
    pub account_id: Option<String>,
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// `YYYY-MM-DD` (default), `DD.MM.YYYY`, `DD/MM/YYYY`, `MM/DD/YYYY`, `YYYY/MM/DD`.
    pub date_format: Option<String>,
    /// `.` or `,` (default: `,` for `;`-separated files, else `.`).
    pub decimal_separator: Option<String>,
    #[serde(default)]
    pub confirm: bool,
}

fn decimal_comma(u: &BankUpload) -> Result<bool> {
    match u.decimal_separator.as_deref() {
        Some(".") => Ok(false),
        Some(",") => Ok(true),
        Some(other) => Err(AppError::invalid(
            "decimal_separator",
            format!("decimal_separator is `.` or `,`, not `{other}`"),
        )),
        None => {
            let header = u.csv.lines().next().unwrap_or("");
            Ok(header.matches(';').count() > header.matches(',').count())
        }
    }
}

pub async fn run(tx: &mut TenantTx, u: &BankUpload) -> Result<(Account, Report)> {
    let comma = decimal_comma(u)?;
    super::date_pattern(u.date_format.as_deref())
        .map_err(|m| AppError::invalid("date_format", m))?;
    let mut parsed = imports::parse(&u.csv, FIELDS, &u.mapping)?;
    let has = |f: &str| parsed.mapping.contains_key(f);
    if !(has("amount") || has("debit") || has("credit")) {
        return Err(AppError::invalid(
            "mapping",
            "no amount column: map `amount` (signed) or `debit` and `credit` to your columns",
        ));
    }
    let account = super::account_or_default(tx, u.account_id.as_deref()).await?;
    let cats = super::categories(tx).await?;
    let existing: Vec<(String,)> = tx
        .fetch_all(
            scoped("SELECT fingerprint FROM transactions WHERE tenant_id = $1 AND account_id = $2")
                .bind(&account.id),
        )
        .await?;
    let existing: HashSet<String> = existing.into_iter().map(|(f,)| f).collect();
    let rows = std::mem::take(&mut parsed.rows);
    let total = rows.len() + parsed.errors.len();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut good: Vec<(NewTransaction, String)> = Vec::new();
    let mut duplicates = 0;
    for (line, row) in rows {
        let get = |k: &str| row.get(k).map(String::as_str);
        let date = match get("date").map(|d| parse_date(d, u.date_format.as_deref())) {
            Some(Ok(d)) => d,
            Some(Err(m)) => {
                parsed.error(line, Some("date"), m);
                continue;
            }
            None => {
                parsed.error(line, Some("date"), "the date is empty");
                continue;
            }
        };
        if let Some(c) = get("currency")
            && !c.trim().eq_ignore_ascii_case(&account.currency)
        {
            parsed.error(
                line,
                Some("currency"),
                format!(
                    "{} does not match the account's currency {}",
                    c.trim(),
                    account.currency
                ),
            );
            continue;
        }
        let money = |k: &str| {
            get(k)
                .map(|v| crate::money::parse_with(v, &account.currency, comma))
                .transpose()
        };
        let amount = match (money("amount"), money("debit"), money("credit")) {
            (Err(m), _, _) => Err(("amount", m)),
            (_, Err(m), _) => Err(("debit", m)),
            (_, _, Err(m)) => Err(("credit", m)),
            (Ok(Some(a)), _, _) => Ok(a),
            (Ok(None), Ok(d), Ok(c)) => match (d, c) {
                (None, None) => Err(("amount", "no amount on this row".to_owned())),
                (d, c) => Ok(c.unwrap_or(0).abs() - d.unwrap_or(0).abs()),
            },
        };
        let amount = match amount {
            Ok(a) => a,
            Err((field, m)) => {
                parsed.error(line, Some(field), m);
                continue;
            }
        };
        let mut t = match NewTransaction::new(date, amount, get("counterparty"), get("description"))
        {
            Ok(t) => t,
            Err(AppError::Invalid { field, message }) => {
                parsed.error(line, Some(field), message);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = get("category") {
            match find_category(&cats, c) {
                Some(cat) => {
                    t.category = Some(cat.name.clone());
                    t.categorized_by = Some("manual");
                }
                None => {
                    parsed.error(
                        line,
                        Some("category"),
                        super::unknown_category(c, &cats).to_string(),
                    );
                    continue;
                }
            }
        }
        let base = t.fingerprint_base(&account.id);
        let n = seen.entry(base.clone()).or_default();
        *n += 1;
        let fp = format!("{base}:{n}");
        if existing.contains(&fp) {
            duplicates += 1;
            continue;
        }
        good.push((t, fp));
    }
    let sample = good
        .iter()
        .take(imports::SAMPLE_ROWS)
        .map(|(t, _)| {
            json!({"booked_on": t.booked_on, "amount": crate::money::format(t.amount_minor, &account.currency),
                   "amount_minor": t.amount_minor, "currency": account.currency, "counterparty": t.counterparty,
                   "memo": t.memo, "category": t.category})
        })
        .collect();
    let valid = good.len();
    let mut imported = 0;
    if u.confirm {
        let rules = super::rules(tx).await?;
        for (t, fp) in &mut good {
            if t.category.is_none()
                && let Some(c) = super::categorize::rule_for(
                    &rules,
                    t.counterparty.as_deref(),
                    t.memo.as_deref(),
                )
            {
                t.category = Some(c.to_owned());
                t.categorized_by = Some("rule");
            }
            super::insert(tx, &account, t, fp, "import").await?;
            imported += 1;
        }
        if imported > 0 {
            super::refresh_metrics(tx).await?;
        }
    }
    Ok((
        account,
        parsed.report(u.confirm, total, valid, imported, duplicates, sample),
    ))
}
