//! Email templates: plain text with `{{ variable }}` placeholders, and
//! `{{ variable | fallback }}` for a value that may be empty ("Hi {{ first_name | there }}").
//!
//! Templates are checked when saved: an unknown variable or an unclosed `{{` is a 422
//! naming it, so a campaign never goes out with a literal `{{frist_name}}` in it.
//! Substituted values are the recipient's own data, inserted as text (the email is
//! plain text, so nothing in a value can become markup).

use std::collections::BTreeMap;

/// Variables every recipient has (empty when unknown).
pub const STANDARD: &[&str] = &["name", "first_name", "company", "email", "unsubscribe_url"];

/// One `{{ … }}`: the variable and its fallback.
struct Placeholder<'a> {
    start: usize,
    end: usize,
    var: &'a str,
    fallback: Option<&'a str>,
}

fn placeholders(text: &str) -> Result<Vec<Placeholder<'_>>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{") {
        let start = from + open;
        let Some(close) = text[start + 2..].find("}}") else {
            return Err(format!(
                "a `{{{{` at character {start} is never closed with `}}}}`"
            ));
        };
        let end = start + 2 + close + 2;
        let inner = &text[start + 2..end - 2];
        let (var, fallback) = match inner.split_once('|') {
            Some((v, f)) => (v.trim(), Some(f.trim())),
            None => (inner.trim(), None),
        };
        out.push(Placeholder {
            start,
            end,
            var,
            fallback,
        });
        from = end;
    }
    Ok(out)
}

/// Checks `text`: every placeholder is closed and names a standard variable or one of
/// `extra` (the keys the recipients carry).
pub fn check(text: &str, extra: &[String]) -> Result<(), String> {
    for p in placeholders(text)? {
        if !STANDARD.contains(&p.var) && !extra.iter().any(|e| e == p.var) {
            let mut known: Vec<&str> = STANDARD.to_vec();
            known.extend(extra.iter().map(String::as_str));
            return Err(format!(
                "`{{{{{}}}}}` is not a variable; use one of: {}",
                p.var,
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Replaces each placeholder with its value, or its fallback when the value is empty.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> String {
    let Ok(list) = placeholders(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for p in list {
        out.push_str(&text[at..p.start]);
        let v = vars.get(p.var).map(String::as_str).unwrap_or("");
        out.push_str(if v.is_empty() {
            p.fallback.unwrap_or("")
        } else {
            v
        });
        at = p.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The standard variables for a recipient, plus its own.
pub fn variables(
    email: &str,
    name: Option<&str>,
    company: Option<&str>,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut v = own.clone();
    let name = name.unwrap_or("").trim();
    v.insert("email".into(), email.to_owned());
    v.insert("name".into(), name.to_owned());
    v.insert(
        "first_name".into(),
        name.split_whitespace().next().unwrap_or("").to_owned(),
    );
    v.insert("company".into(), company.unwrap_or("").to_owned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_fallbacks_and_refuses_unknown_names() {
        let vars = variables("ann@x.test", Some("Ann Lee"), None, &BTreeMap::new());
        assert_eq!(
            render("Hi {{ first_name }} from {{company|your team}}!", &vars),
            "Hi Ann from your team!"
        );
        assert_eq!(render("{{name}}{{email}}", &vars), "Ann Leeann@x.test");
        assert!(
            check("Hi {{ frist_name }}", &[])
                .unwrap_err()
                .contains("frist_name")
        );
        assert!(check("Hi {{ plan }}", &["plan".into()]).is_ok());
        assert!(
            check("Hi {{ name", &[])
                .unwrap_err()
                .contains("never closed")
        );
        assert!(check("no placeholders } here {", &[]).is_ok());
    }
}
