//! gRPC adapter for `AuditService`: auditors and supervisors read the trail.

use super::SignIn;
use crate::audit::Audit;
use crate::auth::Role;
use crate::error::Error;
use exitnet_proto::pb;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    sign_in: SignIn,
    audit: Audit,
}

impl AuditApi {
    pub fn new(sign_in: SignIn, audit: Audit) -> Self {
        Self { sign_in, audit }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let entry = || self.audit.caller(&p, "audit.query", "audit", "");
        let allowed = match p.role {
            Role::Auditor | Role::Supervisor => Ok(()),
            Role::CaseManager | Role::System => Err(Error::PermissionDenied(
                "only auditors and supervisors read the audit trail".into(),
            )),
        };
        self.audit.guard(entry, allowed).await?;
        let query = crate::audit::AuditQuery::try_from(request.get_ref())?;
        let page = self.audit.list(&query).await?;
        if query.after_seq == 0 {
            self.audit.record(&[entry()]).await;
        }
        Ok(Response::new(page.into()))
    }
}
