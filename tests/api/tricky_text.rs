//! Unicode a hostile or merely unlucky caller sends: the same password or email in another
//! normalization form, look-alike addresses, names with bidi overrides, and accounts made before
//! any of this was normalized.

use identity::{
    domain::{PasswordHash, UserId},
    proto::ChangePasswordRequest,
};
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer},
    on_both_backends,
};

on_both_backends!(
    a_password_typed_as_nfc_nfd_or_fullwidth_is_one_password,
    the_password_ceiling_applies_to_the_normalized_form,
    a_hash_from_before_normalization_logs_in_as_typed_and_is_rehashed,
    change_password_checks_a_hash_from_before_normalization_as_typed,
    normalized_spellings_and_look_alikes_of_a_taken_email_are_already_exists,
    login_matches_the_normalized_email_but_not_a_look_alike,
    accounts_from_before_normalization_get_their_keys_at_start,
    names_with_bidi_controls_or_format_characters_are_refused,
);

const NFC: &str = "caf\u{e9}-maple-orbit-tundra-42";
const NFD: &str = "cafe\u{301}-maple-orbit-tundra-42";
const FULLWIDTH: &str = "caf\u{e9}-\u{ff4d}aple-orbit-tundra-42";

fn user_id(user: &identity::proto::User) -> UserId {
    user.id.parse().expect("a user id is a UUID")
}

async fn a_password_typed_as_nfc_nfd_or_fullwidth_is_one_password(app: TestApp) {
    app.signup("nadia@example.com", NFD, "Nadia").await.unwrap();
    for typed in [NFC, NFD, FULLWIDTH] {
        assert!(app.login("nadia@example.com", typed).await.is_ok(), "{typed:?}");
    }
    let status = assert_code(
        app.login("nadia@example.com", "cafe-maple-orbit-tundra-42").await,
        Code::Unauthenticated,
    );
    assert!(!status.message().contains("cafe"));
}

async fn the_password_ceiling_applies_to_the_normalized_form(app: TestApp) {
    // Three U+FDFA are 9 bytes as typed and 99 once normalized: bcrypt would cut that short.
    let expanding = format!("{}-maple-orbit", "\u{fdfa}".repeat(3));
    let status = assert_code(app.signup("omar@example.com", &expanding, "Omar").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["password"]);
    assert!(status.message().contains("at most 71 bytes"), "{status:?}");
    // 14 code points as typed, 16 once the ligature is normalized: long enough.
    assert!(app.signup("omar@example.com", "\u{fb03}-tundra-orbi7", "Omar").await.is_ok());
    assert!(app.login("omar@example.com", "ffi-tundra-orbi7").await.is_ok());
}

async fn a_hash_from_before_normalization_logs_in_as_typed_and_is_rehashed(app: TestApp) {
    let user = app.signup("petra@example.com", PASSWORD, "Petra").await.unwrap();
    let id = user_id(&user);
    // What older code stored: bcrypt of the NFD text exactly as it was typed.
    let legacy = PasswordHash::new(bcrypt::hash(NFD, 4).unwrap());
    app.store.set_password_hash_as_before(id, &legacy).await.unwrap();

    // Until it is rehashed, the account takes the password as it was typed, and only so.
    assert_code(app.login("petra@example.com", NFC).await, Code::Unauthenticated);
    assert_eq!(app.store.password_hash_of(id).await.unwrap(), (legacy.expose().to_owned(), false));
    app.login("petra@example.com", NFD).await.unwrap();

    // That login rehashed the normalized form: every spelling works from now on.
    let (hash, normalized) = app.store.password_hash_of(id).await.unwrap();
    assert!(normalized);
    assert_ne!(hash, legacy.expose());
    for typed in [NFC, NFD, FULLWIDTH] {
        assert!(app.login("petra@example.com", typed).await.is_ok(), "{typed:?}");
    }
}

async fn change_password_checks_a_hash_from_before_normalization_as_typed(app: TestApp) {
    let user = app.signup("quinn@example.com", PASSWORD, "Quinn").await.unwrap();
    let id = user_id(&user);
    let login = app.login("quinn@example.com", PASSWORD).await.unwrap();
    let token = login.tokens.unwrap().access_token;
    app.store
        .set_password_hash_as_before(id, &PasswordHash::new(bcrypt::hash(NFD, 4).unwrap()))
        .await
        .unwrap();

    let change = |current: &str| {
        bearer(
            ChangePasswordRequest {
                current_password: current.into(),
                new_password: "quartz-lantern-meadow-77".into(),
            },
            &token,
        )
    };
    assert_code(app.users().change_password(change(NFC)).await, Code::Unauthenticated);
    app.users().change_password(change(NFD)).await.unwrap();
    assert!(app.store.password_hash_of(id).await.unwrap().1, "the new hash is of the normalized text");
    assert!(app.login("quinn@example.com", "quartz-lantern-meadow-77").await.is_ok());
}

async fn normalized_spellings_and_look_alikes_of_a_taken_email_are_already_exists(app: TestApp) {
    app.signup("jos\u{e9}@example.com", PASSWORD, "Jos\u{e9}").await.unwrap();
    app.signup("alice@example.com", PASSWORD, "Alice").await.unwrap();
    for taken in [
        "jose\u{301}@example.com",   // NFD
        "JOSE\u{301}@EXAMPLE.COM",   // NFD, upper case
        "\u{ff41}lice@example.com",  // fullwidth a
        "\u{430}lice@example.com",   // Cyrillic a
        "alice@ex\u{430}mple.com",   // Cyrillic a in the domain
        "al\u{456}ce@example.com",   // Cyrillic i
        "ali\u{200d}ce@example.com", // a zero-width joiner
    ] {
        let status = assert_code(app.signup(taken, PASSWORD, "Mallory").await, Code::AlreadyExists);
        assert!(
            !status.message().contains("constraint") && !status.message().contains("skeleton"),
            "{status:?}"
        );
    }
    // Distinct ASCII addresses that a plain TS #39 skeleton would merge stay distinct accounts.
    for pair in [["amie@example.com", "arnie@example.com"], ["bill1@example.com", "billl@example.com"]] {
        for email in pair {
            assert!(app.signup(email, PASSWORD, "Someone").await.is_ok(), "{email}");
        }
    }
}

async fn login_matches_the_normalized_email_but_not_a_look_alike(app: TestApp) {
    let user = app.signup("jos\u{e9}@example.com", PASSWORD, "Jos\u{e9}").await.unwrap();
    for typed in ["jose\u{301}@example.com", "JOS\u{c9}@example.com", "jos\u{e9}@\u{ff45}xample.com"] {
        let login = app.login(typed, PASSWORD).await.unwrap();
        assert_eq!(login.user.unwrap().id, user.id, "{typed:?}");
    }
    // A look-alike is refused at signup, not matched at login: it is simply another address.
    assert_code(app.login("j\u{43e}s\u{e9}@example.com", PASSWORD).await, Code::Unauthenticated);
}

async fn accounts_from_before_normalization_get_their_keys_at_start(app: TestApp) {
    // Older code stored these as typed, matched on plain lower case, without a key: the
    // fullwidth spelling would never match "alice@example.com".
    let alice = user_id(&app.signup("alice@example.com", PASSWORD, "Alice").await.unwrap());
    app.store.set_email_as_before(alice, "\u{ff21}lice@example.com").await.unwrap();
    // Two older accounts that are one address under the new rules: the older keeps it.
    let zoe = user_id(&app.signup("zoe@example.com", PASSWORD, "Zoe").await.unwrap());
    let later = user_id(&app.signup("zoe.2@example.com", "quartz-lantern-meadow-77", "Zoe 2").await.unwrap());
    app.store.set_email_as_before(zoe, "zoe@example.com").await.unwrap();
    app.store.set_email_as_before(later, "\u{ff5a}oe@example.com").await.unwrap();

    let app = app.restart().await;
    assert_eq!(
        app.store.email_keys_of(alice).await.unwrap(),
        ("alice@example.com".to_owned(), Some("alice@example.com".to_owned()))
    );
    let login = app.login("alice@example.com", PASSWORD).await.unwrap();
    assert_eq!(user_id(&login.user.unwrap()), alice);
    assert_code(app.signup("\u{430}lice@example.com", PASSWORD, "Mallory").await, Code::AlreadyExists);

    assert_eq!(app.store.email_keys_of(zoe).await.unwrap().1.as_deref(), Some("zoe@example.com"));
    assert_eq!(app.store.email_keys_of(later).await.unwrap(), ("\u{ff5a}oe@example.com".to_owned(), None));
    assert_eq!(user_id(&app.login("zoe@example.com", PASSWORD).await.unwrap().user.unwrap()), zoe);
    // A second start leaves the conflict as it was (and still starts).
    let app = app.restart().await;
    assert_eq!(app.store.email_keys_of(later).await.unwrap().1, None);
}

async fn names_with_bidi_controls_or_format_characters_are_refused(app: TestApp) {
    // "Eve" followed by a right-to-left override makes "gpj.exe" display as "exe.jpg".
    for name in ["Eve\u{202e}gpj.exe", "Eve\u{2067}x\u{2069}", "Ev\u{200b}e", "Eve\u{feff}", "Eve\u{ad}lyn"] {
        let status = assert_code(app.signup("eve@example.com", PASSWORD, name).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["full_name"], "{name:?}");
    }
    // Joiners that real names need are fine: Persian with a ZWNJ.
    let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
    assert_eq!(app.signup("eve@example.com", PASSWORD, persian).await.unwrap().full_name, persian);
}
