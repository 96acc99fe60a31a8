//! A session as its owner (and an admin) sees it: when it started and was last used, where it
//! was started from. Never its refresh token or digest.

use chrono::{DateTime, Utc};

use super::{SessionId, UserId};

/// Where a login came from, recorded on its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOrigin {
    /// The client's IP address (the forwarded one behind a trusted proxy).
    pub address: Option<String>,
    /// The client's `user-agent`, printable, at most 256 bytes.
    pub user_agent: Option<String>,
}

/// A live session (not revoked, not expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    /// The login, or the last refresh.
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub origin: SessionOrigin,
}
