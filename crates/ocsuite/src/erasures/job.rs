//! The `erase-person` job: carries out an approved erasure ([`super::erase`]) and
//! closes it with an `erasure.completed` audit entry (its receipt is the erasure's)
//! listing each table and how many rows went or changed; the address is then dropped
//! from the request, which keeps its hint and salted hash.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::erase::{ERASED, Person, erase};
use super::{ERASE_QUEUE, get, mark_failed, owner_refused};
use crate::error::{AppError, Result};
use crate::ids::{ErasureId, TenantId};
use crate::queue::Claimed;
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::realtime::Event;
use crate::state::AppState;
use crate::store::{TenantTx, cross_tenant, scoped};

#[derive(Serialize, Deserialize)]
pub struct EraseJob {
    pub tenant_id: TenantId,
    pub erasure_id: ErasureId,
}

/// The `erase-person` job (in the HQ company's queue).
pub struct ErasePerson {
    state: AppState,
}

impl ErasePerson {
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
        }
    }

    async fn attempt(&self, job: &EraseJob) -> Result<Value> {
        let mut tx = self.state.store.tenant(&job.tenant_id).await?;
        // One rewrite of the company's log at a time (a second run of this job, the
        // retention pass); the request is read under the lock.
        cross_tenant::lock_redactions(&mut tx).await?;
        let e = get(&mut tx, &job.erasure_id, self.state.clock.now()).await?;
        if e.status == "done" {
            return Ok(json!({ "already": true }));
        }
        if e.status != "approved" {
            return Err(AppError::Conflict(format!("the request is {}", e.status)));
        }
        let (email,): (Option<String>,) = tx
            .fetch_one(
                scoped("SELECT email FROM erasures WHERE tenant_id = $1 AND id = $2")
                    .bind(&job.erasure_id),
            )
            .await?;
        let email =
            email.ok_or_else(|| AppError::Conflict("the request holds no address".into()))?;
        if let Some(u) = &e.user_id {
            let role: Option<(String,)> = tx
                .fetch_optional(
                    scoped("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                        .bind(u),
                )
                .await?;
            if role.is_some_and(|(r,)| r == "owner") {
                return Err(owner_refused());
            }
        }
        let person = Person {
            email: &email,
            user: e.user_id.as_deref(),
        };
        let manifest = Value::Object(erase(&mut tx, &person).await?);
        // The admins, unless one of them was the person.
        let admin = |a: Option<&str>| match a {
            Some(a) if Some(a) == e.user_id.as_deref() => Some(ERASED.to_owned()),
            other => other.map(str::to_owned),
        };
        let (requested_by, approved_by) = (
            admin(Some(&e.requested_by)),
            admin(e.approved_by.as_deref()),
        );
        let receipt = crate::audit::record_system_sealed(
            &mut tx,
            "erasure.completed",
            "erasure",
            job.erasure_id.as_str(),
            json!({ "requested_by": requested_by, "approved_by": approved_by, "removed": manifest }),
        )
        .await?;
        tx.execute(
            scoped(
                "UPDATE erasures SET status = 'done', email = NULL, user_id = NULL, finished_at = $3, manifest = $4, receipt_id = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'approved'",
            )
            .bind(&job.erasure_id)
            .bind(Utc::now())
            .bind(manifest.to_string())
            .bind(&receipt),
        )
        .await?;
        tx.commit().await?;
        Ok(json!({ "removed": manifest, "receipt": receipt }))
    }

    async fn give_up(&self, job: &EraseJob, why: &str) {
        let failed = async {
            let mut tx = self.state.store.tenant(&job.tenant_id).await?;
            mark_failed(&mut tx, &job.erasure_id, why).await?;
            tx.commit().await?;
            Ok::<_, AppError>(())
        };
        if let Err(e) = failed.await {
            tracing::error!(error = %e, erasure = %job.erasure_id, "an erasure's failure could not be recorded");
        }
    }
}

impl Handler for ErasePerson {
    fn queue(&self) -> &'static str {
        ERASE_QUEUE
    }

    fn start<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            match job.payload_as::<EraseJob>() {
                Some(p) => Start::run(Duration::from_secs(600), vec![], &p),
                None => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: EraseJob = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.attempt(&p).await {
                Ok(output) => Outcome::Succeeded {
                    output,
                    summary: Some("person erased".into()),
                },
                Err(e @ AppError::Conflict(_)) => {
                    self.give_up(&p, &e.to_string()).await;
                    Outcome::Failed {
                        error: e.to_string(),
                        retryable: false,
                    }
                }
                Err(e) => {
                    if job.attempts >= job.max_attempts {
                        tracing::error!(error = %e, erasure = %p.erasure_id, "an erasure failed for good");
                        self.give_up(&p, "the erasure could not be carried out; ask again, and if it fails again tell the operator")
                            .await;
                    }
                    Outcome::Failed {
                        error: e.to_string(),
                        retryable: true,
                    }
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        _job: &'a Claimed,
        _resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async { Ok(vec![]) })
    }
}
