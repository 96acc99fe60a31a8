//! Who may call the service-facing RPCs, one model for all of them: a caller authenticates by an
//! allow-listed client certificate or by a service API key (or, once roles exist, by a person's
//! access token) and holds [`Permission`]s; each RPC names the one it needs. Also the limits on
//! the long-lived streams such callers open, and the operator's [`ServiceKeyAdmin`].
//!
//! No credential, or a key that is unknown or revoked: UNAUTHENTICATED. A credential without the
//! right: PERMISSION_DENIED. Every authorised call is an audit event naming the caller (never the
//! key).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use super::Identity;
use crate::{
    clock::Clock,
    domain::{
        AllowedCertificates, Caller, CallerKind, Credential, Permission, Permissions, Role, ServiceKey,
        ServiceKeyName,
    },
    error::AppError,
    store::{ServiceKeyRecord, Store, StoreError},
};

/// How service callers are let in, and how many streams they may hold open.
#[derive(Debug, Clone)]
pub struct CallerPolicy {
    /// Client-certificate names let in, with their permissions (`IDENTITY_MTLS_CALLERS`).
    pub certificates: AllowedCertificates,
    /// The role that makes a person's access token an admin caller (`IDENTITY_ADMIN_ROLE`).
    pub admin_role: Role,
    /// Open streams per caller (`IDENTITY_MAX_STREAMS_PER_CALLER`).
    pub max_streams_per_caller: usize,
    /// Open streams in all (`IDENTITY_MAX_STREAMS`).
    pub max_streams: usize,
}

impl Identity {
    /// The caller behind `credential` if it holds `needed`; `action` names the call in the audit
    /// event. A service key costs one indexed lookup by digest; a certificate or a token none.
    pub async fn authorize(
        &self,
        credential: Credential,
        needed: Permission,
        action: &'static str,
    ) -> Result<Caller, AppError> {
        let caller = self.authenticate(credential).await?;
        if !caller.permissions.contains(needed) {
            tracing::info!(
                target: "audit", event = "service_call_denied", action, caller = %caller.name,
                via = caller.kind.as_str(), needed = needed.as_str()
            );
            return Err(AppError::PermissionDenied("the caller lacks the permission this call needs"));
        }
        tracing::info!(target: "audit", event = "service_call", action, caller = %caller.name, via = caller.kind.as_str());
        Ok(caller)
    }

    async fn authenticate(&self, credential: Credential) -> Result<Caller, AppError> {
        match credential {
            Credential::None => Err(AppError::Unauthenticated(
                "this call needs a service credential: a service key or an allow-listed client certificate",
            )),
            Credential::Certificate(names) => {
                let Some((name, permissions)) = self.callers.certificates.matching(&names) else {
                    // Verified by our CA, so someone we know, but not let in here.
                    tracing::info!(target: "audit", event = "service_call_denied", certificate = ?names, "client certificate not allow-listed");
                    return Err(AppError::PermissionDenied("the client certificate is not allow-listed"));
                };
                Ok(Caller {
                    name: name.to_owned(),
                    kind: CallerKind::Certificate,
                    permissions: permissions.clone(),
                })
            }
            Credential::ServiceKey(key) => {
                let digest = key.digest();
                let Some((name, permissions)) = self.store.find_service_key(&digest).await? else {
                    return Err(AppError::Unauthenticated("unknown or revoked service key"));
                };
                Ok(Caller { name: name.to_string(), kind: CallerKind::ServiceKey(digest), permissions })
            }
            Credential::AccessToken(token) => {
                use secrecy::ExposeSecret;
                let verified = self
                    .validate(token.expose_secret())
                    .map_err(|_| AppError::Unauthenticated("invalid or expired access token"))?;
                // A person holding the admin role may use the admin API; nobody else may do
                // anything here. Removing the role ends their sessions, so this token dies too.
                let permissions = if verified.claims.has_role(self.callers.admin_role.as_str()) {
                    Permissions::from_iter([Permission::Admin])
                } else {
                    Permissions::default()
                };
                Ok(Caller {
                    name: verified.claims.sub.to_string(),
                    kind: CallerKind::User(verified.claims.sub),
                    permissions,
                })
            }
        }
    }

    /// Whether a caller let in earlier still holds `needed`: long streams ask this
    /// periodically, so that revoking a key ends them. A certificate's permissions come from the
    /// configuration and cannot change under a running process. A database that does not
    /// answer is not a revocation: the stream goes on, and asks again later.
    pub async fn still_authorized(&self, caller: &Caller, needed: Permission) -> Result<(), AppError> {
        let CallerKind::ServiceKey(digest) = &caller.kind else { return Ok(()) };
        match self.store.find_service_key(digest).await {
            Ok(Some((_, permissions))) if permissions.contains(needed) => Ok(()),
            Ok(Some(_)) => Err(AppError::PermissionDenied("the caller lacks the permission this call needs")),
            Ok(None) => {
                tracing::info!(target: "audit", event = "service_stream_ended", caller = %caller.name, reason = "key revoked");
                Err(AppError::Unauthenticated("the service key was revoked"))
            }
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(%error, caller = %caller.name, "cannot re-check a service key; the stream goes on");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A slot for one more open stream of `caller`, held until the permit is dropped;
    /// RESOURCE_EXHAUSTED past the per-caller or the global limit.
    pub fn open_stream(&self, caller: &Caller) -> Result<StreamPermit, AppError> {
        self.streams.open(caller)
    }
}

/// Open service-facing streams, in all and per caller. The per-caller map holds an entry only
/// while that caller has a stream open, so it is bounded by the global limit, and only
/// authenticated callers reach it.
pub struct StreamLimits {
    per_caller: usize,
    global: usize,
    open: Arc<Mutex<OpenStreams>>,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    by_caller: HashMap<(&'static str, String), usize>,
}

impl StreamLimits {
    pub fn new(per_caller: usize, global: usize) -> Self {
        Self { per_caller, global, open: Arc::default() }
    }

    fn open(&self, caller: &Caller) -> Result<StreamPermit, AppError> {
        let (kind, name) = caller.id();
        let key = (kind, name.to_owned());
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.global {
            return Err(AppError::TooManyStreams("the server has as many open streams as it allows"));
        }
        let mine = open.by_caller.get(&key).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(AppError::TooManyStreams("this caller has as many open streams as it may"));
        }
        open.total += 1;
        open.by_caller.insert(key.clone(), mine + 1);
        Ok(StreamPermit { open: Arc::clone(&self.open), key })
    }

    #[cfg(test)]
    fn callers_tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).by_caller.len()
    }
}

/// One open stream's slot; dropping it frees the slot.
pub struct StreamPermit {
    open: Arc<Mutex<OpenStreams>>,
    key: (&'static str, String),
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_caller.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_caller.remove(&self.key);
            }
        }
    }
}

/// Operator actions on service keys (`identity service-key create|revoke|list`): each one
/// statement, so one transaction, and one audit event. Needs only the store and the clock.
pub struct ServiceKeyAdmin {
    store: Store,
    clock: Clock,
}

impl ServiceKeyAdmin {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Creates a key named `name` with `permissions` and returns it: the only time it is seen.
    /// `Ok(None)` when a key (live or revoked) already has that name.
    pub async fn create(
        &self,
        name: &ServiceKeyName,
        permissions: &Permissions,
    ) -> Result<Option<ServiceKey>, AppError> {
        if permissions.is_empty() {
            return Err(AppError::InvalidArgument(crate::domain::InvalidRequest(vec![
                crate::domain::FieldViolation::new("permission", "at least one is required"),
            ])));
        }
        let key = ServiceKey::generate();
        match self.store.insert_service_key(name, &key.digest(), permissions, self.clock.now()).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "service_key_created", name = %name, %permissions);
                Ok(Some(key))
            }
            Err(StoreError::UniqueViolation) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Revokes the key named `name`: new calls with it are refused at once, its open streams
    /// end at their next re-check. `false` when no live key has that name.
    pub async fn revoke(&self, name: &ServiceKeyName) -> Result<bool, AppError> {
        let revoked = self.store.revoke_service_key(name, self.clock.now()).await?;
        if revoked {
            tracing::info!(target: "audit", event = "service_key_revoked", name = %name);
        }
        Ok(revoked)
    }

    pub async fn list(&self) -> Result<Vec<ServiceKeyRecord>, AppError> {
        Ok(self.store.list_service_keys().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Caller {
        Caller {
            name: name.into(),
            kind: CallerKind::Certificate,
            permissions: Permissions::from_iter([Permission::WatchRevocations]),
        }
    }

    #[test]
    fn streams_are_capped_per_caller_and_in_all_and_the_map_forgets_idle_callers() {
        let limits = StreamLimits::new(2, 3);
        let a1 = limits.open(&caller("a")).unwrap();
        let a2 = limits.open(&caller("a")).unwrap();
        assert!(matches!(limits.open(&caller("a")), Err(AppError::TooManyStreams(_))));
        let b1 = limits.open(&caller("b")).unwrap();
        assert!(matches!(limits.open(&caller("c")), Err(AppError::TooManyStreams(_))), "global cap");
        drop(a1);
        let a3 = limits.open(&caller("a")).unwrap();
        assert_eq!(limits.callers_tracked(), 2);
        drop((a2, a3, b1));
        assert_eq!(limits.callers_tracked(), 0);
    }
}
