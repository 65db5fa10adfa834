//! Tenant scoping by construction, checked over the source. Every SQL literal that
//! touches a tenant table must be a `scoped(…)` query (its `$1` is the tenant, bound by
//! the tenant transaction itself) and must use `$1` as the tenant condition. On SQLite
//! nothing else stands between one tenant and another's rows. The one exception is the
//! cross-tenant files, `store/cross_tenant/`, which a reviewer reads beside the
//! SECURITY DEFINER functions of the PostgreSQL migrations.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::helpers::rust_files;

/// The only file whose SQL may span tenants.
/// A folder: `mod.rs` and the files it splits off.
const CROSS_TENANT_FILE: &str = "store/cross_tenant";

/// Tables with a `tenant_id` column, from the PostgreSQL migrations, and `tenants`
/// itself (keyed by `id`).
pub fn tenant_tables(root: &Path) -> BTreeSet<String> {
    let mut tables = BTreeSet::from(["tenants".to_owned()]);
    let mut files: Vec<_> = std::fs::read_dir(root.join("migrations/postgres"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for part in text.split("CREATE TABLE ").skip(1) {
            let name: String = part
                .trim_start_matches("IF NOT EXISTS ")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let body = part.split("\n);").next().unwrap_or_default();
            if body
                .lines()
                .any(|l| l.trim_start().starts_with("tenant_id "))
            {
                tables.insert(name);
            }
        }
    }
    tables
}

/// The index of the `)` closing the `(` at `open`, skipping string literals.
fn closing(s: &[u8], open: usize) -> usize {
    let (mut depth, mut i) = (0, open);
    while i < s.len() {
        match s[i] {
            b'"' => {
                i += 1;
                while s[i] != b'"' {
                    i += if s[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses")
}

/// The string literals in `expr`, concatenated (string continuations joined).
fn literals(expr: &str) -> String {
    let mut out = String::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i += 1;
            while b[i] != b'"' {
                if b[i] == b'\\' && b[i + 1] == b'\n' {
                    i += 2;
                    while b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    continue;
                }
                out.push(b[i] as char);
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            out.push(' ');
        }
        i += 1;
    }
    out
}

/// The code of a file without its unit tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

fn ident_before(s: &str, end: usize) -> &str {
    let start = s[..end]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &s[start..end]
}

struct Query {
    at: String,
    scoped: bool,
    text: String,
}

fn queries(src: &Path) -> Vec<Query> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    // The SQL that `select_x!("…")`-style macros put in front of their argument.
    let mut macros = HashMap::new();
    for (_, text) in &texts {
        for (i, _) in text.match_indices("macro_rules! ") {
            let name = &text[i + 13..];
            let name: String = name.chars().take_while(|c| *c != ' ').collect();
            let body_start = i + text[i..].find('{').unwrap();
            let body_end = body_start + text[body_start..].find("\n}\n").unwrap();
            macros.insert(name, literals(&text[body_start..body_end]));
        }
    }
    let mut out = Vec::new();
    for (rel, text) in &texts {
        if rel.starts_with("store/") && !rel.starts_with(CROSS_TENANT_FILE) {
            continue; // the query builder itself
        }
        let code = without_tests(text);
        for (i, _) in code.match_indices('(') {
            let name = ident_before(code, i);
            let scoped = name == "scoped";
            if !(scoped || name == "sql") {
                continue;
            }
            let head = &code[..i - name.len()];
            let before = head.chars().last().unwrap_or(' ');
            let path_call = head.ends_with("store::");
            if before == '.' || (before == ':' && !path_call) || head.ends_with("fn ") {
                continue;
            }
            let end = closing(code.as_bytes(), i);
            let arg = &code[i + 1..end];
            let mut sql = literals(arg);
            if let Some(bang) = arg.find("!(") {
                let mac = ident_before(arg, bang);
                sql = format!("{} {sql}", macros.get(mac).cloned().unwrap_or_default());
            }
            let line = code[..i].matches('\n').count() + 1;
            out.push(Query {
                at: format!("{rel}:{line}"),
                scoped,
                text: sql,
            });
        }
    }
    out
}

fn touches(sql: &str, tables: &BTreeSet<String>) -> Vec<String> {
    let words: Vec<&str> = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut hit = Vec::new();
    for pair in words.windows(2) {
        let kw = pair[0].to_ascii_uppercase();
        if matches!(kw.as_str(), "FROM" | "JOIN" | "INTO" | "UPDATE") && tables.contains(pair[1]) {
            hit.push(pair[1].to_owned());
        }
    }
    hit
}

/// Whether the SQL constrains the tenant by `$1`: `tenant_id = $1` (any alias), or an
/// insert that writes `$1` into `tenant_id`.
/// On `tenants` alone the condition is `id = $1`.
fn has_tenant_condition(sql: &str, hit: &[String]) -> bool {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    // `$1` itself, not `$10`…`$19`.
    let has = |needle: &str| {
        flat.match_indices(needle)
            .any(|(i, _)| !flat[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
    };
    let insert = flat.contains("INSERT INTO") && has("$1");
    if hit.iter().all(|t| t == "tenants") {
        return has(" id = $1") || insert;
    }
    has("tenant_id = $1") || (insert && flat.contains("tenant_id"))
}

fn violations(src: &Path, tables: &BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    for q in queries(src) {
        let hit = touches(&q.text, tables);
        if hit.is_empty() || q.at.starts_with(CROSS_TENANT_FILE) {
            continue;
        }
        if !q.scoped {
            bad.push(format!(
                "{}: unscoped query on {hit:?}: {}",
                q.at,
                q.text.trim()
            ));
        } else if !has_tenant_condition(&q.text, &hit) {
            bad.push(format!(
                "{}: no `tenant_id = $1` on {hit:?}: {}",
                q.at,
                q.text.trim()
            ));
        }
    }
    bad
}

#[test]
fn every_query_on_a_tenant_table_is_scoped_to_the_transactions_tenant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tables = tenant_tables(root);
    assert!(tables.len() >= 30, "tenant tables found: {tables:?}");
    assert!(tables.contains("tasks") && !tables.contains("users"));
    let src = root.join("src");
    let all = queries(&src);
    let on_tenant_tables = all
        .iter()
        .filter(|q| !touches(&q.text, &tables).is_empty())
        .count();
    assert!(
        on_tenant_tables >= 150,
        "only {on_tenant_tables} tenant queries found: the scan is broken"
    );
    let bad = violations(&src, &tables);
    assert!(
        bad.is_empty(),
        "{} queries on tenant tables without the tenant scope (use `scoped(…)` with \
         `tenant_id = $1`, or move cross-tenant maintenance into {CROSS_TENANT_FILE}):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The scan itself must catch what it is for: a copy of the source with one tenant
/// condition removed, and one with a scoped query made plain, both fail.
#[test]
fn the_scope_scan_catches_a_missing_tenant_condition() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tables = tenant_tables(root);
    let dir = std::env::temp_dir().join(format!("ocsuite-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.rs");
    std::fs::write(
        &file,
        "fn f() { let q = scoped(\"SELECT id FROM tasks WHERE id = $2\"); }\n",
    )
    .unwrap();
    assert_eq!(violations(&dir, &tables).len(), 1);
    std::fs::write(
        &file,
        "fn f() { let q = sql(\"SELECT id FROM tasks WHERE tenant_id = $1\"); }\n",
    )
    .unwrap();
    assert_eq!(violations(&dir, &tables).len(), 1);
    std::fs::write(
        &file,
        "fn f() { let q = scoped(\"SELECT id FROM tasks WHERE tenant_id = $1\"); }\n",
    )
    .unwrap();
    assert!(violations(&dir, &tables).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
