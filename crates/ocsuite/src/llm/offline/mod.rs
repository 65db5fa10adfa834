//! The provider used when no model is configured.
//!
//! It answers deterministically from what the prompt already holds: the persona's
//! guidance (the bullet lists under the `## …` headings the prompt builder writes), the
//! company profile and the user's last message. The answer is useful as a checklist and
//! always says, first, that no model is configured; a chat answer and a meeting's
//! synthesis also say how to configure one. The same input gives the same output, so
//! tests can assert on it.
//!
//! It is a newcomer's first impression, so it reads like a short answer, never like
//! its prompt: a board meeting's prompt is parsed ([`crate::board::prompts::read`]) for
//! its phase, agenda and speakers rather than quoted; the user's words are quoted whole
//! up to a word boundary ([`clip`]); lists are Markdown lists the web app renders.

use tokio::sync::mpsc;

use crate::board::prompts::Ask;

mod meeting;
mod tools;
pub use meeting::{MEETING_NOTICE, TURN_NOTICE};

use super::{
    ChatMessage, ChatRequest, Provider, Role, StreamEvent, Usage, estimate_prompt_tokens,
    estimate_tokens,
};

pub struct Offline;

/// The first line of every offline answer.
pub const NOTICE: &str = "(Offline mode: no language model is configured, so this answer is assembled from my playbook, not generated. For real answers, set `OCSUITE_LLM_API_KEY` (plus `OCSUITE_LLM_BASE_URL` and `OCSUITE_LLM_MODEL` for a server other than Fireworks) and restart.)";

/// Dimensions of the offline embeddings.
pub const EMBEDDING_DIMS: usize = 256;

/// A deterministic bag-of-words embedding: each lower-cased word (and word pair) hashes
/// to a dimension; the vector is L2-normalised. Texts sharing words are close, which is
/// enough for retrieval to work, testably, without a model.
pub fn embed_offline(text: &str) -> Vec<f32> {
    use sha2::{Digest, Sha256};
    let mut v = vec![0f32; EMBEDDING_DIMS];
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut add = |token: &str, weight: f32| {
        let h = Sha256::digest(token.as_bytes());
        let i = usize::from(u16::from_be_bytes([h[0], h[1]])) % EMBEDDING_DIMS;
        let sign = if h[2] & 1 == 0 { 1.0 } else { -1.0 };
        v[i] += sign * weight;
    };
    for w in &words {
        add(w, 1.0);
    }
    for pair in words.windows(2) {
        add(&format!("{} {}", pair[0], pair[1]), 0.5);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

impl Provider for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn embed<'a>(
        &'a self,
        _model: &'a str,
        texts: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Vec<f32>>, super::LlmError>> {
        Box::pin(async move { Ok(texts.iter().map(|t| embed_offline(t)).collect()) })
    }

    fn stream(&self, req: ChatRequest) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::channel(64);
        // A fresh question with tools on offer: look things up first.
        let fresh = req.messages.last().is_some_and(|m| m.role == Role::User);
        let calls = if fresh && !req.tools.is_empty() {
            let q = req.messages.last().map_or("", |m| m.content.as_str());
            tools::choose(q, &req.tools)
        } else {
            Vec::new()
        };
        if !calls.is_empty() {
            let usage = Usage {
                prompt_tokens: estimate_prompt_tokens(&req.messages),
                completion_tokens: calls.iter().map(|c| estimate_tokens(&c.arguments)).sum(),
                estimated: true,
            };
            tokio::spawn(async move {
                for c in calls {
                    if tx.send(StreamEvent::ToolCall(c)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(StreamEvent::Usage(usage)).await;
                let _ = tx
                    .send(StreamEvent::Done {
                        finish_reason: "tool_calls".into(),
                    })
                    .await;
            });
            return rx;
        }
        let text = compose(&req.messages);
        let usage = Usage {
            prompt_tokens: estimate_prompt_tokens(&req.messages),
            completion_tokens: estimate_tokens(&text),
            estimated: true,
        };
        tokio::spawn(async move {
            // Word by word, like a model, so clients exercise their streaming path.
            let mut piece = String::new();
            for (i, word) in text.split_inclusive(' ').enumerate() {
                piece.push_str(word);
                if i % 8 == 7
                    && tx
                        .send(StreamEvent::Delta(std::mem::take(&mut piece)))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if !piece.is_empty() && tx.send(StreamEvent::Delta(piece)).await.is_err() {
                return;
            }
            let _ = tx.send(StreamEvent::Usage(usage)).await;
            let _ = tx
                .send(StreamEvent::Done {
                    finish_reason: "stop".into(),
                })
                .await;
        });
        rx
    }
}

/// Bullets (`- …`) under the heading `## {heading}` in `text`. A `## ` heading or a
/// `<…>` block marker ends a section, so tenant text in a later block never reads as
/// part of the profile.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("## ") {
            // "Current figures (computed by …)" is found as "Current figures".
            inside = h.to_lowercase().starts_with(&heading.to_lowercase());
            continue;
        }
        if t.starts_with('<') {
            inside = false;
            continue;
        }
        if inside && let Some(b) = t.strip_prefix("- ") {
            out.push(b.trim());
        }
    }
    out
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_lowercase)
        .collect()
}

/// The `n` bullets sharing the most words with `question` (ties: their order).
fn pick<'a>(bullets: &[&'a str], question: &str, n: usize) -> Vec<&'a str> {
    let q = words(question);
    let mut scored: Vec<(usize, usize, &str)> = bullets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let score = words(b).iter().filter(|w| q.contains(w)).count();
            (score, i, *b)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, _, b)| b).collect()
}

/// Like [`pick`], but only bullets sharing at least one word with `question`.
fn relevant<'a>(bullets: &[&'a str], question: &str, n: usize) -> Vec<&'a str> {
    let q = words(question);
    let hits: Vec<&str> = bullets
        .iter()
        .copied()
        .filter(|b| words(b).iter().any(|w| q.contains(w)))
        .collect();
    pick(&hits, question, n)
}

/// `text`'s first non-empty line, at most `max` characters, cut at a word boundary and
/// marked with "…": a quote of the user's words never ends mid-word, and never spills
/// a long question or agenda into the answer.
pub fn clip(text: &str, max: usize) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines.next().unwrap_or("");
    let more = lines.next().is_some();
    if line.chars().count() <= max {
        let complete = line.ends_with(['.', '?', '!', ':']);
        return if more && !complete {
            format!("{line}…")
        } else {
            line.to_owned()
        };
    }
    // One character past the limit, so a word ending exactly at it is kept whole.
    let head: String = line.chars().take(max + 1).collect();
    let cut = match head.rfind(char::is_whitespace) {
        Some(i) if i > 0 => &head[..i],
        // One word longer than the limit: nothing to cut at but the limit.
        _ => &head[..head.char_indices().nth(max).map_or(head.len(), |(i, _)| i)],
    };
    format!(
        "{}…",
        cut.trim_end_matches(|c: char| c.is_whitespace() || ",;:-–—(".contains(c))
    )
}

/// The full stop after a closing quote, unless the quote already ends a sentence.
fn full_stop(quote: &str) -> &'static str {
    if quote.ends_with(['?', '!', '.']) {
        ""
    } else {
        "."
    }
}

/// Appends `head` and `items` as a Markdown list, or nothing when there are none.
fn list(out: &mut String, head: &str, items: &[&str]) {
    if !items.is_empty() {
        out.push_str(&format!("\n{head}\n"));
        for i in items {
            out.push_str(&format!("- {i}\n"));
        }
    }
}

/// What an offline answer uses from a persona's system prompt.
struct Playbook<'a> {
    /// `Chief Financial Officer (CFO)`.
    role: &'a str,
    company: Option<&'a str>,
    /// The profile bullets other than the name.
    profile: Vec<&'a str>,
    figures: Vec<&'a str>,
    think: Vec<&'a str>,
    metrics: Vec<&'a str>,
    asks: Vec<&'a str>,
}

impl<'a> Playbook<'a> {
    fn read(system: &'a str) -> Self {
        let role = system
            .lines()
            .find_map(|l| l.trim().strip_prefix("Your role: "))
            .unwrap_or("advisor");
        let all = section(system, "Company profile");
        Playbook {
            role,
            company: all.iter().find_map(|b| b.strip_prefix("Name: ")),
            // The name heads the list; the currency shows in the figures.
            profile: all
                .into_iter()
                .filter(|b| !b.starts_with("Name: ") && !b.starts_with("Currency: "))
                .collect(),
            figures: section(system, "Current figures"),
            think: section(system, "How you think"),
            metrics: section(system, "Metrics you watch"),
            asks: section(system, "Questions you ask"),
        }
    }

    fn company(&self) -> &'a str {
        self.company.unwrap_or("the company")
    }
}

fn compose(messages: &[ChatMessage]) -> String {
    let system: String = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let question = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    // The documents block is read on its own: a passage never reads as playbook.
    let (system, documents) = match system.split_once("\n<company_documents>\n") {
        Some((head, tail)) => (head.to_owned(), passages(tail)),
        None => (system, Vec::new()),
    };
    let book = Playbook::read(&system);
    // A board meeting's prompt is read for what it asks, never quoted.
    match crate::board::prompts::read(question) {
        Some(Ask::Position { agenda }) => meeting::position(&book, &agenda),
        Some(Ask::Response { agenda, others }) => meeting::response(&book, &agenda, &others),
        Some(Ask::Synthesis {
            agenda,
            speakers,
            absent,
        }) => meeting::synthesis(&book, &agenda, &speakers, &absent),
        None => {
            let earlier = messages
                .iter()
                .filter(|m| m.role == Role::User)
                .count()
                .saturating_sub(1);
            let mut out = chat(&book, question, earlier, &documents);
            if let Some(r) = tools::report(messages) {
                // After the opening paragraph, before the playbook.
                let at = out.find("\n\n").map_or(out.len(), |i| {
                    out[i + 2..].find('\n').map_or(out.len(), |j| i + 2 + j + 1)
                });
                out.insert_str(at, &format!("\n{r}"));
            }
            out
        }
    }
}

/// The numbered passages of a `<company_documents>` block: (n, text).
fn passages(block: &str) -> Vec<(String, String)> {
    let block = block.split("</company_documents>").next().unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let label = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
            .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        match (label, out.last_mut()) {
            (Some((n, _)), _) => out.push((n.to_owned(), String::new())),
            (None, Some((_, text))) => {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(line.trim());
            }
            (None, None) => {}
        }
    }
    out.retain(|(_, t)| !t.trim().is_empty());
    out
}

/// A chat answer: the question, what is known about the company (first answer only),
/// and the playbook bullets that share the most words with the question.
fn chat(book: &Playbook, question: &str, earlier: usize, documents: &[(String, String)]) -> String {
    let q = clip(question, 120);
    let mut out = format!(
        "{NOTICE}\n\nAs your {}, here is how I would approach \"{q}\"{}",
        book.role,
        full_stop(&q)
    );
    match earlier {
        0 => {}
        1 => out.push_str(" This builds on the 1 earlier question in this conversation."),
        n => out.push_str(&format!(
            " This builds on the {n} earlier questions in this conversation."
        )),
    }
    out.push('\n');
    if !documents.is_empty() {
        out.push_str("\nWhat the company's documents say:\n");
        for (n, text) in documents.iter().take(3) {
            out.push_str(&format!("- {} [{n}]\n", clip(text, 220)));
        }
    }
    if earlier == 0 && !book.profile.is_empty() {
        let head = format!("What I know about {}:", book.company());
        list(&mut out, &head, &book.profile[..book.profile.len().min(4)]);
    }
    list(
        &mut out,
        "The company's current figures that bear on this:",
        &pick(&book.figures, question, 3),
    );
    list(
        &mut out,
        "How I would think about it:",
        &pick(&book.think, question, 2),
    );
    list(
        &mut out,
        "Numbers I would look at first:",
        &pick(&book.metrics, question, 2),
    );
    list(
        &mut out,
        "Questions for you before deciding:",
        &pick(&book.asks, question, 2),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_answers_quote_the_company_figures() {
        let system = "Your role: Chief Financial Officer (CFO)\n## Metrics you watch\n- Runway in months\n\
                      <company_data>\n## Company profile\n- Name: Acme\n\n\
                      ## Current figures (computed by ocsuite from the company's own data)\n\
                      ### bookkeeping (as of 2026-11-27)\n- Runway: 5.3 months\n- Cash balance: 8000.00 USD\n</company_data>";
        let out = compose(&[
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, "How long is our runway?"),
        ]);
        assert!(out.contains("current figures"), "{out}");
        assert!(out.contains("- Runway: 5.3 months"), "{out}");
        assert!(out.contains("Cash balance: 8000.00 USD"), "{out}");
    }

    #[test]
    fn offline_embeddings_are_normalised_and_similar_for_similar_text() {
        let a = embed_offline("monthly burn rate and runway");
        let b = embed_offline("what is our runway at this burn rate");
        let c = embed_offline("wedding photography prices");
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(dot(&a, &b) > dot(&a, &c));
        assert_eq!(a, embed_offline("monthly burn rate and runway"));
    }

    #[test]
    fn answers_from_the_prompt_deterministically() {
        let system = "Your role: Chief Financial Officer (CFO)\n## How you think\n- Cash is oxygen: protect runway first\n- Price for value\n## Metrics you watch\n- Monthly burn rate\n- Runway in months\n## Questions you ask\n- What does this do to runway?\n## Company profile\n- Name: Acme\n- Industry: retail\n";
        let msgs = vec![
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, "Should we hire? Our runway worries me."),
        ];
        let a = compose(&msgs);
        assert_eq!(a, compose(&msgs));
        assert!(a.starts_with(NOTICE));
        assert!(a.contains("As your Chief Financial Officer (CFO)"));
        assert!(a.contains("Runway in months"));
        assert!(
            a.contains("What I know about Acme:\n- Industry: retail\n"),
            "{a}"
        );
        assert!(!a.contains("Name: Acme"), "{a}");
        // The runway bullet outranks the pricing one for a runway question.
        let think = a.find("Cash is oxygen").unwrap();
        let price = a.find("Price for value").unwrap();
        assert!(think < price);
    }

    pub(super) const CFO: &str = "Your role: Chief Financial Officer (CFO)\n## How you think\n- Cash is oxygen: protect runway first\n- Price for value\n## Metrics you watch\n- Monthly burn rate\n- Gross margin\n## Questions you ask\n- What does this do to runway?\n- What is the payback period?\n- Can we survive the downside?\n<company_data>\n## Company profile\n- Name: Acme\n- Industry: retail\n</company_data>\n<company_instructions>\n- Report in EUR\n</company_instructions>\n";

    pub(super) fn answer(user: &str) -> String {
        compose(&[
            ChatMessage::new(Role::System, CFO),
            ChatMessage::new(Role::User, user),
        ])
    }

    #[test]
    fn clips_at_word_boundaries() {
        assert_eq!(
            clip("Should we raise prices?", 100),
            "Should we raise prices?"
        );
        assert_eq!(
            clip("Should we raise prices by 10% in January?", 24),
            "Should we raise prices…"
        );
        assert_eq!(clip("one two", 3), "one…");
        assert_eq!(clip("abcdefgh", 3), "abc…");
        assert_eq!(clip("\n  Hire?\nMore detail", 50), "Hire?");
        assert_eq!(clip("Hire two people\nor one", 50), "Hire two people…");
        assert_eq!(clip("ünïcödé wörds hère", 9), "ünïcödé…");
    }

    #[test]
    fn tenant_blocks_do_not_read_as_the_profile() {
        let a = answer("What about prices?");
        assert!(!a.contains("Report in EUR"), "{a}");
    }
}
