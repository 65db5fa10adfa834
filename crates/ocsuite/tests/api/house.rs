//! House rules checked over the source, so they cannot erode unnoticed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::helpers::rust_files;

/// Roles are checked in one place: a handler states the least role it needs by the type
/// it extracts (`TenantCtx`, `Member`, `Admin`, `SuperAdmin`), never in its body. The
/// exceptions are rules that depend on the data, which the domain functions own, and
/// the OAuth callback, whose tenant comes from the stored authorization state rather
/// than from the request.
#[test]
fn handlers_check_roles_by_their_extractor_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    let mut handlers = 0;
    for p in files {
        let rel = p
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&p).unwrap();
        let is_handlers = rel.ends_with("routes.rs") || rel == "queue/admin.rs" || rel == "demo.rs";
        if !is_handlers {
            continue;
        }
        handlers += text.matches("#[utoipa::path(").count();
        for (i, line) in text.lines().enumerate() {
            let allowed =
                rel == "connectors/routes.rs" && line.contains("ctx.require(Role::Admin)");
            if (line.contains(".require(") || line.contains("is_super_admin")) && !allowed {
                offenders.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        handlers >= 100,
        "only {handlers} handlers found: the scan is broken"
    );
    assert!(
        offenders.is_empty(),
        "take `Member`, `Admin` or `SuperAdmin` instead of checking a role in a handler:\n{}",
        offenders.join("\n")
    );
}

/// The crate's modules by path (`tenancy::extract`), each with its file's text minus its
/// unit tests.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = BTreeMap::new();
    for p in files {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue; // the crate root: start-up code, depended on by nothing
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => text[..i].to_owned(),
            None => text,
        };
        out.insert(parts.join("::"), text);
    }
    out
}

/// The module a path lands in: its longest prefix that is a module of its own.
fn target(mods: &BTreeMap<String, String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

fn idents(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.match_indices(|c: char| c.is_ascii_lowercase() || c == '_')
        .filter(move |(i, _)| {
            *i == 0 || !s[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(move |(i, _)| {
            let len = s[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(s.len() - i);
            (i, s[i..i + len].trim_end_matches(':'))
        })
}

/// Which modules each module names: `crate::a::b` paths (also inside `use crate::{…}`
/// groups) and `super::x`.
fn import_graph(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (m, text) in mods {
        let mut edges = BTreeSet::new();
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p).to_owned();
        for (i, word) in idents(text) {
            let path = if let Some(rest) = word.strip_prefix("crate::") {
                if rest.is_empty() && text[i + word.len()..].starts_with("::{") {
                    // `use crate::{a, b::c}`: each member is a path from the root.
                    let group = &text[i + word.len() + 3..];
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let item = item.trim().split([' ', '{']).next().unwrap_or("");
                        if let Some(t) = target(mods, item.trim_end_matches("::")) {
                            edges.insert(t);
                        }
                    }
                    continue;
                }
                rest.to_owned()
            } else if let Some(rest) = word.strip_prefix("super::") {
                // In module `a::b`, `super` is `a`, whichever file `a::b` lives in.
                if parent.is_empty() {
                    rest.to_owned()
                } else {
                    format!("{parent}::{rest}")
                }
            } else {
                continue;
            };
            if let Some(t) = target(mods, path.trim_end_matches("::"))
                && t != *m
            {
                edges.insert(t);
            }
        }
        graph.insert(m.clone(), edges);
    }
    graph
}

/// Strongly connected components (Tarjan), largest first.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    s.out
}

/// Dependencies flow one way (ids → store → domains → routes → router → main): no import
/// cycle spans more than three files. The two-file ones that remain are written down in
/// docs/architecture.md.
#[test]
fn no_import_cycle_spans_more_than_three_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    assert!(mods.len() >= 100, "only {} modules found", mods.len());
    let graph = import_graph(&mods);
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(
        edges >= 300,
        "only {edges} imports found: the scan is broken"
    );
    let largest = cycles(&graph).into_iter().next().unwrap_or_default();
    assert!(
        largest.len() <= 3,
        "an import cycle spans {} files: {}",
        largest.len(),
        largest.join(", ")
    );
}
