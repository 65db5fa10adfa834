//! Approvals: roles, concurrency, rejection, policy, undo.
