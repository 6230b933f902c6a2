//! gRPC adapter for `AuditService`: auditors and supervisors read the trail.

use super::authenticate;
use crate::auth::Role;
use crate::error::Error;
use crate::state::NodeState;
use exitnet_proto::pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    state: Arc<NodeState>,
}

impl AuditApi {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let (p, _permit) = authenticate(&self.state, &request).await?;
        let entry = || {
            crate::audit::AuditEntry::caller(self.state.now_ms(), &p, "audit.query", "audit", "")
        };
        let allowed = match p.role {
            Role::Auditor | Role::Supervisor => Ok(()),
            Role::CaseManager | Role::System => Err(Error::PermissionDenied(
                "only auditors and supervisors read the audit trail".into(),
            )),
        };
        crate::audit::guard(&self.state, entry, allowed).await?;
        let query = crate::audit::AuditQuery::try_from(request.get_ref())?;
        let page = crate::audit::list(&self.state, &query).await?;
        if query.after_seq == 0 {
            crate::audit::record(&self.state, &[entry()]).await;
        }
        Ok(Response::new(page.into()))
    }
}
