-- Agents that act: the tool calls an answer made, the tools a built-in officer may use,
-- and the conversation a task was proposed from (its outcome is reported back there).
ALTER TABLE messages ADD COLUMN tool_calls TEXT;
ALTER TABLE persona_overrides ADD COLUMN capabilities TEXT;
ALTER TABLE tasks ADD COLUMN conversation_id TEXT;
