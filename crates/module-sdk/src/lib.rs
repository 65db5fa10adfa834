//! The module contract between the ocsuite control plane and its modules.
//!
//! Filled in by the tasks/queue work: capability manifests, JSON Schemas, validation.
