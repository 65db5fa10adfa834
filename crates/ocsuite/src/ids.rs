//! Typed, prefixed identifiers.
//!
//! Every id that crosses a function boundary is one of these, never a bare `String`:
//! the prefix makes a misplaced id (a user id where a tenant id belongs) fail loudly at
//! parse time, and makes ids self-describing in logs and support tickets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses `ten_<32 hex>`; anything else is rejected.
            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?.strip_prefix('_')?;
                (hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .then(|| Self(s.to_owned()))
            }

            /// The 32 hex digits after the prefix (used inside tokens that name their id).
            pub fn hex(&self) -> &str {
                &self.0[$prefix.len() + 1..]
            }

            pub fn from_hex(hex: &str) -> Option<Self> {
                Self::parse(&format!("{}_{}", $prefix, hex))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("not a valid {} id: {s:?}", $prefix))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "expected an id of the form {}_<32 hex digits>",
                        $prefix
                    ))
                })
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-9a-f]{32}$")))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}

        impl From<&$name> for crate::store::Arg {
            fn from(id: &$name) -> Self {
                crate::store::Arg::Text(id.0.clone())
            }
        }
        impl From<$name> for crate::store::Arg {
            fn from(id: $name) -> Self {
                crate::store::Arg::Text(id.0)
            }
        }
        impl From<Option<&$name>> for crate::store::Arg {
            fn from(id: Option<&$name>) -> Self {
                crate::store::Arg::OptText(id.map(|i| i.0.clone()))
            }
        }
        // Read straight out of a row: a stored id that does not parse is a decode error,
        // not a silently different value.
        impl sqlx::Type<sqlx::Sqlite> for $name {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <String as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $name {
            fn decode(v: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <String as sqlx::Decode<sqlx::Sqlite>>::decode(v)?;
                Self::try_from(s).map_err(Into::into)
            }
        }
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(v: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <String as sqlx::Decode<sqlx::Postgres>>::decode(v)?;
                Self::try_from(s).map_err(Into::into)
            }
        }
    };
}

typed_id!(
    /// A company using ocsuite.
    TenantId,
    "ten"
);
typed_id!(
    /// A person who can log in.
    UserId,
    "usr"
);
typed_id!(
    /// A login session (browser cookie or bearer token).
    SessionId,
    "ses"
);
typed_id!(
    /// A tenant API key.
    ApiKeyId,
    "key"
);
typed_id!(
    /// An invitation to join a tenant.
    InviteId,
    "inv"
);
typed_id!(
    /// An audit log entry.
    AuditId,
    "aud"
);
typed_id!(
    /// An encrypted tenant secret.
    SecretId,
    "sec"
);
typed_id!(
    /// A request to run one module capability.
    TaskId,
    "tsk"
);
typed_id!(
    /// A durable queue entry.
    JobId,
    "job"
);
typed_id!(
    /// A tenant's registered MCP server (an external module).
    McpServerId,
    "mcp"
);
typed_id!(
    /// A chat between a person and one persona or agent.
    ConversationId,
    "cnv"
);
typed_id!(
    /// One message of a conversation.
    MessageId,
    "msg"
);
typed_id!(
    /// A tenant's OAuth connection to one provider.
    ConnectorId,
    "con"
);
typed_id!(
    /// A board meeting.
    MeetingId,
    "mtg"
);
typed_id!(
    /// One action item a board meeting produced.
    ActionItemId,
    "act"
);
typed_id!(
    /// An in-app notification for one person.
    NotificationId,
    "ntf"
);
typed_id!(
    /// An email in the outbox.
    EmailId,
    "eml"
);
typed_id!(
    /// A lead in the LeadTracker pipeline.
    LeadId,
    "lead"
);
typed_id!(
    /// A bookkeeping account (bank, card, cash).
    AccountId,
    "acc"
);
typed_id!(
    /// A bookkeeping transaction.
    TransactionId,
    "txn"
);
typed_id!(
    /// A categorisation rule.
    RuleId,
    "rule"
);
typed_id!(
    /// An email campaign.
    CampaignId,
    "cmp"
);
typed_id!(
    /// One recipient of one campaign.
    RecipientId,
    "rcp"
);

typed_id!(
    /// A knowledge source: an upload, a web page, a Drive selection or Notion pages.
    KnowledgeSourceId,
    "ksrc"
);
typed_id!(
    /// One passage of a knowledge source, the unit of search and citation.
    ChunkId,
    "kchk"
);

typed_id!(
    /// A trigger: a condition (schedule, metric rule, platform event) and an action.
    TriggerId,
    "trg"
);
typed_id!(
    /// One firing of a trigger.
    TriggerRunId,
    "trn"
);
typed_id!(
    /// An alert in the tenant's inbox.
    AlertId,
    "alr"
);
typed_id!(
    /// A tenant's outgoing webhook endpoint.
    WebhookId,
    "whk"
);
typed_id!(
    /// One message to one webhook endpoint (also its `webhook-id` header).
    DeliveryId,
    "msg"
);
typed_id!(
    /// A digest: the week's figures, alerts and decisions, in the CEO's words.
    DigestId,
    "dig"
);

typed_id!(
    /// A super-admin's "view as" session in one company.
    ImpersonationId,
    "imp"
);
typed_id!(
    /// A request to delete a company, approved by a second super-admin.
    DeletionId,
    "del"
);
typed_id!(
    /// A signed receipt: one entry of a company's transparency log.
    ReceiptId,
    "rct"
);
typed_id!(
    /// A signing key of the receipt logs.
    LogKeyId,
    "lgk"
);
typed_id!(
    /// A policy decision on a privileged action.
    DecisionId,
    "pdc"
);
typed_id!(
    /// An export of a company's data and evidence.
    ExportId,
    "exp"
);
typed_id!(
    /// A request to erase one person from a company, approved by a second admin.
    ErasureId,
    "era"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_rejects_foreign_prefix() {
        let t = TenantId::new();
        assert_eq!(TenantId::parse(t.as_str()), Some(t.clone()));
        assert_eq!(TenantId::from_hex(t.hex()), Some(t.clone()));
        assert!(UserId::parse(t.as_str()).is_none());
        assert!(TenantId::parse("ten_xyz").is_none());
        assert!(TenantId::parse("ten_' OR 1=1 --").is_none());
    }
}
