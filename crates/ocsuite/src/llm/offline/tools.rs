//! Tool use without a model: the offline provider picks a tool by the words of the
//! question, and reports what the tools returned.
//!
//! It is deliberately plain: a question about the pipeline reads the pipeline summary,
//! one about runway or cash reads the books, one about campaigns reads their figures,
//! "add a lead named X" proposes adding X, and anything else that names the documents
//! searches them. Only tools on offer are called. The same question gives the same
//! calls, so tests (and the evaluation harness) can assert on them; and a company with
//! no model still sees its real figures in the answer.

use serde_json::{Value, json};

use super::super::{ChatMessage, Role, ToolCall, ToolSpec};

/// The calls to make for `question`, given the tools on offer (empty: just answer).
pub fn choose(question: &str, tools: &[ToolSpec]) -> Vec<ToolCall> {
    let q = question.to_lowercase();
    let offered = |name: &str| tools.iter().any(|t| t.name == name);
    let has = |words: &[&str]| words.iter().any(|w| q.contains(w));
    let mut calls: Vec<(String, Value)> = Vec::new();
    if let Some(name) = lead_to_add(question)
        && offered("leadtracker__add_lead")
    {
        calls.push(("leadtracker__add_lead".into(), json!({"name": name})));
    } else if has(&["pipeline", "lead", "deal", "sales", "prospect"])
        && offered("leadtracker__pipeline_summary")
    {
        calls.push(("leadtracker__pipeline_summary".into(), json!({})));
    }
    if has(&[
        "runway", "cash", "burn", "revenue", "expense", "spend", "books", "profit", "afford",
    ]) && offered("bookkeeping__financial_summary")
    {
        calls.push(("bookkeeping__financial_summary".into(), json!({})));
    }
    if has(&["campaign", "newsletter", "open rate", "bounce"]) && offered("email__campaign_stats") {
        calls.push(("email__campaign_stats".into(), json!({})));
    }
    if calls.is_empty()
        && has(&[
            "document",
            "policy",
            "contract",
            "our docs",
            "handbook",
            "according to",
        ])
        && offered("knowledge__search")
    {
        let query: String = question.chars().take(200).collect();
        calls.push(("knowledge__search".into(), json!({"query": query})));
    }
    calls
        .into_iter()
        .enumerate()
        .map(|(i, (name, args))| ToolCall {
            id: format!("offline_{}", i + 1),
            name,
            arguments: args.to_string(),
        })
        .collect()
}

/// "Add a lead named Acme Robotics", "add Acme Robotics as a lead", "add lead: Acme".
fn lead_to_add(question: &str) -> Option<String> {
    let lower = question.to_lowercase();
    let start = [
        "add a lead named ",
        "add a lead called ",
        "add the lead ",
        "add lead ",
    ]
    .iter()
    .find_map(|p| lower.find(p).map(|i| i + p.len()))
    .or_else(|| {
        let i = lower.find("add ")? + 4;
        lower[i..].contains(" as a lead").then_some(i)
    })?;
    let rest = question.get(start..)?;
    let name: String = rest
        .trim_start_matches([':', ' '])
        .split([',', '.', '!', '?', '\n'])
        .next()?
        .split(" as a lead")
        .next()?
        .split(" to the pipeline")
        .next()?
        .trim()
        .chars()
        .take(200)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The results of this answer's tool calls, as lines for the offline answer: what was
/// read (its figures) and what awaits approval.
pub fn report(messages: &[ChatMessage]) -> Option<String> {
    // Only the calls made for the last question.
    let last_user = messages.iter().rposition(|m| m.role == Role::User)?;
    let mut out = String::new();
    for m in &messages[last_user..] {
        if m.role != Role::Tool {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&m.content) else {
            continue;
        };
        match v["status"].as_str() {
            Some("succeeded") => {
                out.push_str(&format!("- {}\n", figures(&v["output"])));
            }
            Some("awaiting_approval") => out.push_str(
                "- I proposed it as a task: it awaits your approval (Approve below, or in Approvals) and has not run.\n",
            ),
            _ => out.push_str(&format!(
                "- A lookup failed: {}\n",
                v["error"].as_str().unwrap_or("no reason given")
            )),
        }
    }
    (!out.is_empty()).then(|| format!("What I looked up:\n{out}"))
}

/// A tool's output in one line: its scalar fields ("cash_balance_minor: 812345, …"),
/// or the passages' sources for a search.
fn figures(output: &Value) -> String {
    if let Some(passages) = output["passages"].as_array() {
        if passages.is_empty() {
            return "The company's documents have nothing on this.".into();
        }
        let names: Vec<String> = passages
            .iter()
            .take(3)
            .map(|p| {
                format!(
                    "{} ({})",
                    p["source"].as_str().unwrap_or("a document"),
                    super::clip(p["text"].as_str().unwrap_or(""), 100)
                )
            })
            .collect();
        return format!("From the documents: {}", names.join("; "));
    }
    let Some(obj) = output.as_object() else {
        return output.to_string().chars().take(200).collect();
    };
    let currency = obj.get("currency").and_then(Value::as_str);
    // In name order: JSON objects keep their insertion order in this build (a
    // dependency turns on serde_json's `preserve_order`), and the summary should not
    // depend on how a module built its output.
    let mut fields: Vec<(&String, &Value)> = obj.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = fields
        .into_iter()
        .filter(|(k, v)| {
            (v.is_number() || v.is_string() || v.is_boolean()) && k.as_str() != "currency"
        })
        .take(8)
        .map(
            |(k, v)| match (k.strip_suffix("_minor"), v.as_i64(), currency) {
                // Amounts in minor units read as money: "cash balance: 30144.56 USD".
                (Some(name), Some(minor), Some(c)) => format!(
                    "{}: {} {c}",
                    name.replace('_', " "),
                    crate::money::format(minor, c)
                ),
                _ => format!(
                    "{}: {}",
                    k.replace('_', " "),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                ),
            },
        )
        .collect();
    if parts.is_empty() {
        "It answered with no figures.".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({}),
        }
    }

    #[test]
    fn picks_tools_by_the_question_and_only_offered_ones() {
        let all = [
            spec("leadtracker__pipeline_summary"),
            spec("leadtracker__add_lead"),
            spec("bookkeeping__financial_summary"),
            spec("knowledge__search"),
        ];
        let names = |q: &str, t: &[ToolSpec]| -> Vec<String> {
            choose(q, t).into_iter().map(|c| c.name).collect()
        };
        assert_eq!(
            names("What is in my pipeline?", &all),
            ["leadtracker__pipeline_summary"]
        );
        assert_eq!(
            names("How long is our runway?", &all),
            ["bookkeeping__financial_summary"]
        );
        assert_eq!(
            names("What does our refund policy say?", &all),
            ["knowledge__search"]
        );
        assert!(names("Hello there", &all).is_empty());
        assert!(names("What is in my pipeline?", &all[2..]).is_empty());
        let add = choose(
            "Please add a lead named Acme Robotics, they called today.",
            &all,
        );
        assert_eq!(add[0].name, "leadtracker__add_lead");
        assert_eq!(add[0].arguments, r#"{"name":"Acme Robotics"}"#);
        let add = choose("Add Zeta GmbH as a lead", &all);
        assert_eq!(add[0].arguments, r#"{"name":"Zeta GmbH"}"#);
    }

    #[test]
    fn reports_results_of_the_last_question_only() {
        let msgs = vec![
            ChatMessage::new(Role::User, "old"),
            ChatMessage::tool_result("a", r#"{"status":"succeeded","output":{"x":1}}"#),
            ChatMessage::new(Role::User, "new"),
            ChatMessage::tool_result(
                "b",
                r#"{"status":"succeeded","output":{"runway_months":5.5,"currency":"USD","cash_balance_minor":3014456,"months":[]}}"#,
            ),
            ChatMessage::tool_result("c", r#"{"status":"awaiting_approval","task_id":"tsk_1"}"#),
        ];
        let r = report(&msgs).unwrap();
        assert!(
            r.contains("cash balance: 30144.56 USD, runway months: 5.5"),
            "{r}"
        );
        assert!(r.contains("awaits your approval"), "{r}");
        assert!(!r.contains("x: 1") && !r.contains("_minor"), "{r}");
    }
}
