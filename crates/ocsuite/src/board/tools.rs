//! A board member's tools: the read-only lookups a member may make during its turn
//! (work is proposed through the meeting's action items, not mid-turn).

use serde_json::{Value, json};

use super::meeting::{Client, Plan, TURN_MAX_TOKENS};
use crate::agents::Speaker;
use crate::agents::tools::{self, Toolbox};
use crate::llm::{ChatMessage, ChatRequest, Role, ToolCall};

/// Most tool steps a member may take in one turn.
const TURN_TOOL_STEPS: u32 = 3;

impl Plan {
    /// A member's turn: the request with its read-only tools (none offline).
    pub(super) fn member_request(&self, s: &Speaker, user: String) -> ChatRequest {
        let mut req = self.request(s, user, TURN_MAX_TOKENS);
        if !self.offline
            && let Some(t) = self.toolbox(&s.persona.slug)
        {
            req.tools = t.specs();
        }
        req
    }

    fn toolbox(&self, slug: &str) -> Option<&Toolbox> {
        self.members
            .iter()
            .position(|m| m.persona.slug == slug)
            .and_then(|i| self.toolboxes.get(i))
    }

    /// Runs a member's tool calls and adds them and their results to `req`; after
    /// [`TURN_TOOL_STEPS`] steps the tools are withdrawn so the member answers.
    pub(super) async fn use_tools(
        &self,
        client: &mut Client,
        slug: &str,
        req: &mut ChatRequest,
        text: String,
        calls: Vec<ToolCall>,
        step: u32,
    ) {
        let Some(toolbox) = self.toolbox(slug) else {
            return;
        };
        let meeting = self.id.to_string();
        let caller = tools::Caller {
            tenant: &self.tenant,
            agent: slug,
            conversation: None,
            meeting: Some(&meeting),
        };
        let mut results = Vec::new();
        for call in calls.iter().take(8) {
            client
                .send(
                    "tool_call",
                    json!({"persona": slug, "id": call.id, "name": call.name,
                           "capability": toolbox.capability_of(&call.name),
                           "input": serde_json::from_str::<Value>(&call.arguments).unwrap_or(Value::Null)}),
                )
                .await;
            let outcome = tools::call(&self.state, &caller, toolbox, call).await;
            let mut ev = json!(outcome);
            ev["persona"] = json!(slug);
            client.send("tool_result", ev).await;
            results.push(ChatMessage::tool_result(&call.id, outcome.for_model()));
        }
        req.messages.push(ChatMessage::calls(text, calls));
        req.messages.extend(results);
        if step >= TURN_TOOL_STEPS {
            req.tools.clear();
            req.messages.push(ChatMessage::new(
                Role::System,
                "No more tool calls in this turn. Give your position now with what you have.",
            ));
        }
    }
}
