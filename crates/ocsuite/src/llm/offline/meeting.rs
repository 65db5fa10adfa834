//! The offline provider's board-meeting turns: a member's position (round 1), their
//! answer to the others (round 2) and the chair's synthesis, each read from the
//! meeting prompt's phase, agenda and speakers, never from its text.

use super::{Playbook, clip, list, pick, relevant};

/// A member's turn starts with this; the chair's synthesis says how to configure a model.
pub const TURN_NOTICE: &str = "(Offline mode: a playbook answer, not generated.)";

/// The first paragraph of an offline meeting's synthesis.
pub const MEETING_NOTICE: &str = "(Offline mode: no language model is configured, so this meeting was assembled from the officers' playbooks, not generated. For a real discussion, set `OCSUITE_LLM_API_KEY` (plus `OCSUITE_LLM_BASE_URL` and `OCSUITE_LLM_MODEL` for a server other than Fireworks) and restart.)";

/// Round 1: a recommendation, the reasons from this seat, and the main risk.
pub(super) fn position(book: &Playbook, agenda: &str) -> String {
    let mut out = format!(
        "{TURN_NOTICE}\n\nAs {}, I recommend we decide \"{}\" on {}'s own numbers, and only once the checks below are done.\n",
        book.role,
        clip(agenda, 100),
        book.company()
    );
    let think = pick(&book.think, agenda, 2);
    if think.is_empty() {
        out.push_str("\nOffline I have no playbook of my own to draw on; a configured model would answer from my brief.\n");
    }
    list(&mut out, "What matters most from my seat:", &think);
    // The figures that bear on the agenda or on this seat's own metrics, so each member
    // quotes their own numbers rather than all quoting the same first three.
    let seat = format!("{agenda} {}", book.metrics.join(" "));
    let figures = relevant(&book.figures, &seat, 3);
    if figures.is_empty() {
        list(
            &mut out,
            "What I would measure first:",
            &pick(&book.metrics, agenda, 2),
        );
    } else {
        list(&mut out, "The figures I would start from:", &figures);
    }
    if let Some(ask) = pick(&book.asks, agenda, 1).first() {
        out.push_str(&format!(
            "\n**Main risk:** deciding before we can answer \"{ask}\"\n"
        ));
    }
    out
}

/// Round 2: whom the member heard, and what they still need answered.
pub(super) fn response(book: &Playbook, agenda: &str, others: &[String]) -> String {
    let heard = if others.is_empty() {
        "No other member's position reached me".to_owned()
    } else {
        format!("Having heard {}", names(others))
    };
    let mut out = format!(
        "{TURN_NOTICE}\n\n{heard}, I hold my position: we agree that deciding \"{}\" needs each seat's checks, and I would not support it before these are answered.\n",
        clip(agenda, 100)
    );
    // The questions after the one round 1 named as the main risk.
    let asks = pick(&book.asks, agenda, 3);
    list(
        &mut out,
        "What I still need to know:",
        asks.get(1..).unwrap_or(&[]),
    );
    out
}

/// The chair's close, under the headings the real prompt asks for, as bold labels.
pub(super) fn synthesis(
    book: &Playbook,
    agenda: &str,
    speakers: &[String],
    absent: &[String],
) -> String {
    let mut out = format!(
        "{MEETING_NOTICE}\n\n**Decision:** no final decision on \"{}\" yet. Each member checks it against {}'s own numbers from their seat and reports back within a week.\n\n\
         **Dissent:** none recorded; offline, the positions are playbook checklists, not arguments.\n",
        clip(agenda, 100),
        book.company()
    );
    let mut risks = vec!["Deciding before the figures each member asked for are in.".to_owned()];
    if !absent.is_empty() {
        risks.push(format!(
            "{} could not take part, so that view is missing.",
            capitalised(&names(absent))
        ));
    }
    let risks: Vec<&str> = risks.iter().map(String::as_str).collect();
    list(&mut out, "**Risks:**", &risks);
    let steps: Vec<String> = speakers
        .iter()
        .map(|s| {
            format!("{s}: work through the checks in their position and report back to the board.")
        })
        .collect();
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    list(&mut out, "**Next steps:**", &steps);
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// "the CEO", "the CEO and the CMO", "the CEO, the CFO and the CMO".
fn names(names: &[String]) -> String {
    let the: Vec<String> = names.iter().map(|n| format!("the {n}")).collect();
    match the.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::offline::compose;
    use crate::llm::offline::tests::{CFO, answer};
    use crate::llm::{ChatMessage, Role};

    /// No block marker, no prompt heading, and every quote ends on a whole word.
    fn assert_clean(text: &str, words_of: &str) {
        assert!(!text.contains('<') && !text.contains("###"), "{text}");
        for quote in text.split('"').skip(1).step_by(2) {
            let last = quote
                .trim_end_matches(['…', '?', '.'])
                .rsplit(' ')
                .next()
                .unwrap_or("");
            assert!(
                words_of
                    .split_whitespace()
                    .any(|w| w.trim_end_matches(['?', '.', ',']) == last)
                    || CFO.contains(quote),
                "{quote:?} ends mid-word in {text}"
            );
        }
    }

    #[test]
    fn meeting_turns_read_as_prose_not_as_their_prompt() {
        use crate::board::prompts::{self, Seat};
        let seat = |s: &str| Seat {
            slug: s.into(),
            name: s.to_uppercase(),
            title: format!("Chief {s}"),
        };
        let board = [seat("ceo"), seat("cfo"), seat("cmo")];
        let agenda = "Should we raise prices by 10% in January, given that our biggest customers renew their contracts in the spring and churn has been rising?";
        let p = answer(&prompts::position(
            agenda,
            Some("Context."),
            &board,
            &board[1],
        ));
        assert!(p.starts_with(TURN_NOTICE), "{p}");
        assert!(
            p.contains("\n- Price for value\n") || p.contains("\n- Cash is oxygen"),
            "{p}"
        );
        assert!(p.contains("**Main risk:**"), "{p}");
        assert_clean(&p, agenda);
        let r = answer(&prompts::response(
            agenda,
            &board[1],
            &[(board[0].clone(), p.clone()), (board[2].clone(), p.clone())],
        ));
        assert!(r.contains("Having heard the CEO and the CMO"), "{r}");
        assert!(r.contains("\n- "), "{r}");
        assert_clean(&r, agenda);
        let s = answer(&prompts::synthesis(
            agenda,
            None,
            &[
                (board[0].clone(), 1, p.clone()),
                (board[1].clone(), 1, p.clone()),
                (board[0].clone(), 2, r.clone()),
            ],
            &[board[2].clone()],
        ));
        assert!(s.starts_with(MEETING_NOTICE), "{s}");
        assert!(s.contains("OCSUITE_LLM_API_KEY"));
        assert_eq!(s.matches("Offline mode").count(), 1, "{s}");
        assert!(
            s.contains("\n- CEO: ") && s.contains("\n- CFO: ") && !s.contains("- CMO:"),
            "{s}"
        );
        assert!(s.contains("The CMO could not take part"), "{s}");
        assert_clean(&s, agenda);
        assert_eq!(
            s,
            answer(&prompts::synthesis(
                agenda,
                None,
                &[
                    (board[0].clone(), 1, p.clone()),
                    (board[1].clone(), 1, p),
                    (board[0].clone(), 2, r)
                ],
                &[board[2].clone()],
            ))
        );
    }

    #[test]
    fn a_member_quotes_the_figures_of_their_seat() {
        use crate::board::prompts::{self, Seat};
        let me = Seat {
            slug: "cfo".into(),
            name: "CFO".into(),
            title: "Chief Financial Officer".into(),
        };
        let system = CFO.replace(
            "</company_data>",
            "## Current figures (computed)\n### leadtracker\n- Open leads: 4\n### bookkeeping\n- Monthly burn: 900 USD\n</company_data>",
        );
        let p = compose(&[
            ChatMessage::new(Role::System, system),
            ChatMessage::new(
                Role::User,
                prompts::position(
                    "Should we move to a bigger office?",
                    None,
                    std::slice::from_ref(&me),
                    &me,
                ),
            ),
        ]);
        assert!(p.contains("\n- Monthly burn: 900 USD\n"), "{p}");
        assert!(!p.contains("Open leads"), "{p}");
    }
}
