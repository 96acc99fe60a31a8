//! Shedding: when every hashing thread is busy and the queue is full, work that would hash is
//! refused at once with RESOURCE_EXHAUSTED and a RetryInfo, not queued.

use identity::proto::LoginRequest;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{PASSWORD, TestApp},
    on_both_backends,
    signup::futures_join_all,
};

on_both_backends!(a_full_hash_pool_sheds_logins_at_once);

async fn a_full_hash_pool_sheds_logins_at_once(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    // One thread, one waiting job, and a cost that keeps the thread busy for a while. (With no
    // queue at all the channel is a rendezvous, and a request arriving while the thread is
    // between two jobs would be shed too.)
    let app = app
        .restart_with(&[
            ("IDENTITY_HASH_THREADS", "1"),
            ("IDENTITY_HASH_QUEUE", "1"),
            ("IDENTITY_BCRYPT_COST", "10"),
        ])
        .await;
    let logins = (0..20).map(|_| {
        let mut auth = app.auth();
        let request = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
        async move { auth.login(request).await }
    });
    let results = futures_join_all(logins).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(!shed.is_empty(), "20 concurrent logins on one busy thread and none was shed");
    for status in shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.get_error_details().retry_info().is_some());
    }
    // Shed attempts did not count towards the lockout: the account still logs in.
    let after = app.login(&user.email, PASSWORD).await;
    assert!(after.is_ok(), "{after:?}");
}
