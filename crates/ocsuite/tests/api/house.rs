//! House rules checked over the source, so they cannot erode unnoticed.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

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
