//! Money: integer minor units plus an ISO 4217 currency, never a float.
//!
//! Amounts arrive as decimal text (`"1234.50"`, `"-12"`, `"1,234.50"` from a bank
//! export) and are parsed exactly, digit by digit, into minor units of the currency. A
//! value with more decimals than the currency has (`"1.234"` USD) is refused rather
//! than rounded: silently losing a fraction is how books stop balancing.

/// Currencies we accept and their number of minor digits. The common ones; a currency
/// missing here is refused with a message naming it (add it here).
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// The minor digits of `code` (upper case), or `None` for a currency we do not know.
pub fn minor_digits(code: &str) -> Option<u32> {
    CURRENCIES.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
}

/// Normalises and checks a currency code: `"usd"` → `"USD"`.
pub fn currency(code: &str) -> Result<String, String> {
    let up = code.trim().to_ascii_uppercase();
    if minor_digits(&up).is_some() {
        Ok(up)
    } else {
        Err(format!(
            "`{}` is not a supported ISO 4217 currency code (for example USD, EUR, GBP, JPY)",
            code.trim()
        ))
    }
}

/// The largest amount any stored figure may hold, in minor units (10^13: a hundred
/// billion dollars in cents). Real books and pipelines never come near it, and it keeps
/// every sum a tenant can build far inside `i64`, so totals stay exact instead of
/// overflowing on a typo like `amount_minor: 9223372036854775807`.
pub const MAX_MINOR: i64 = 10_000_000_000_000;

/// Refuses an amount beyond [`MAX_MINOR`] either way, naming the field.
pub fn check_limit(field: &'static str, minor: i64) -> crate::error::Result<i64> {
    if minor.unsigned_abs() > MAX_MINOR.unsigned_abs() {
        return Err(crate::error::AppError::invalid(
            field,
            format!("{field} is too large: at most {MAX_MINOR} minor units either way"),
        ));
    }
    Ok(minor)
}

/// Parses decimal text into minor units of `currency`. Accepts a sign (or parentheses
/// for a negative, as accountants write it), a currency symbol prefix, and `,` or space
/// as thousands separators; refuses more decimals than the currency has.
pub fn parse(text: &str, currency: &str) -> Result<i64, String> {
    parse_with(text, currency, false)
}

/// [`parse`], where `decimal_comma` reads `1.234,50` as European exports write it.
pub fn parse_with(text: &str, currency: &str, decimal_comma: bool) -> Result<i64, String> {
    let digits = minor_digits(currency).ok_or_else(|| format!("unknown currency {currency}"))?;
    let mut s = text.trim().to_owned();
    let mut negative = false;
    if s.starts_with('(') && s.ends_with(')') {
        negative = true;
        s = s[1..s.len() - 1].trim().to_owned();
    }
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = rest.trim().to_owned();
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest.trim().to_owned();
    }
    let (group, point) = if decimal_comma {
        ('.', ',')
    } else {
        (',', '.')
    };
    // Thousands separators only between groups of three digits ("1,234", not "12,5,0").
    let int_part = s.split(point).next().unwrap_or("");
    let int_part = int_part
        .trim_start_matches(['$', '€', '£', '¥'])
        .trim_start_matches('-');
    if int_part.contains(group) {
        let groups: Vec<&str> = int_part.split(group).collect();
        let ok = groups.first().is_some_and(|g| (1..=3).contains(&g.len()))
            && groups.iter().skip(1).all(|g| g.len() == 3);
        if !ok {
            return Err(format!("`{}` is not an amount", text.trim()));
        }
    }
    let s: String = s
        .trim_start_matches(['$', '€', '£', '¥'])
        .chars()
        .filter(|c| *c != group && *c != ' ' && *c != '\u{a0}' && *c != '\'')
        .map(|c| if c == point { '.' } else { c })
        .collect();
    // A sign after the symbol: "$-12.00".
    let (s, negative) = match s.strip_prefix('-') {
        Some(rest) => (rest.to_owned(), !negative),
        None => (s, negative),
    };
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(format!("`{}` is not an amount", text.trim()));
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{}` is not an amount", text.trim()));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > digits as usize {
        return Err(format!(
            "`{}` has more decimals than {currency} allows ({digits})",
            text.trim()
        ));
    }
    let mut minor: i64 = 0;
    let padded = format!("{frac:0<width$}", width = digits as usize);
    for b in int.bytes().chain(padded.bytes()) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| format!("`{}` is too large", text.trim()))?;
    }
    Ok(if negative { -minor } else { minor })
}

/// Formats minor units as decimal text (`-1234.50`), for prompts, CSV and humans.
pub fn format(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency).unwrap_or(2);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_and_refuses_lost_precision() {
        assert_eq!(parse("1234.5", "USD"), Ok(123_450));
        assert_eq!(parse("1,234.50", "USD"), Ok(123_450));
        assert_eq!(parse("-12", "EUR"), Ok(-1200));
        assert_eq!(parse("(12.30)", "GBP"), Ok(-1230));
        assert_eq!(parse("$-0.05", "USD"), Ok(-5));
        assert_eq!(parse("1500", "JPY"), Ok(1500));
        assert_eq!(parse("1.250", "KWD"), Ok(1250));
        assert_eq!(parse("0.10", "USD"), Ok(10));
        assert_eq!(parse_with("-1.234,5", "EUR", true), Ok(-123_450));
        assert_eq!(parse_with("-12,50", "EUR", true), Ok(-1250));
        assert!(parse("1.234", "USD").unwrap_err().contains("more decimals"));
        assert!(parse("1.5", "JPY").is_err());
        assert!(parse("12a", "USD").is_err());
        assert!(parse("12,5,0", "USD").is_err());
        assert!(parse("1,2345", "USD").is_err());
        assert_eq!(parse("12,345,678.9", "USD"), Ok(1_234_567_890));
        assert!(parse("12,5,0", "USD").is_err());
        assert!(parse("1,2345", "USD").is_err());
        assert_eq!(parse("12,345,678.9", "USD"), Ok(1_234_567_890));
        assert!(parse("", "USD").is_err());
        assert!(parse(".", "USD").is_err());
        assert!(
            parse("99999999999999999999", "USD")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(format(-123_450, "USD"), "-1234.50");
        assert_eq!(format(5, "USD"), "0.05");
        assert_eq!(format(1500, "JPY"), "1500");
        assert_eq!(currency(" eur "), Ok("EUR".into()));
        assert!(currency("XXX").is_err());
    }
}
