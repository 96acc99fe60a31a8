//! Starts the real identity server (SQLite in a temp dir) and the example protected service
//! behind the layer, and signs tokens with the server's own key where a test needs an odd one.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use identity::{
    proto::{
        GetJwksRequest, LoginRequest, LoginResponse, LogoutRequest, SignupRequest,
        auth_service_client::AuthServiceClient, token_service_client::TokenServiceClient,
    },
    testing::TestServer,
};
use identity_client::{AuthConfig, IdentityAuth, ServiceKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Status, transport::Channel};
use uuid::Uuid;

use crate::whoami;
pub use identity::testing::eventually;

pub const PASSWORD: &str = "maple-orbit-tundra-42-vessel";

/// The identity server, with its state (database, keys) in a temp dir that survives restarts.
pub struct IdentityServer {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
    server: TestServer,
    /// A `watch_revocations` key, made on first start (the database keeps it across restarts).
    service_key: ServiceKey,
}

impl IdentityServer {
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let placeholder = ServiceKey::new("");
        let mut server =
            Self::start_at("127.0.0.1:0".parse().unwrap(), data_dir, Vec::new(), placeholder).await;
        let name =
            identity::domain::ServiceKeyName::parse("name", "protected-service").expect("a valid name");
        let permissions = [identity::domain::Permission::WatchRevocations].into_iter().collect();
        let key = server.server.identity().service_keys().create(&name, &permissions).await;
        let key = key.expect("the key is stored").expect("the name is free");
        server.service_key = ServiceKey::new(key.expose());
        server
    }

    /// The layer's default configuration, with this server's service key.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig { service_key: Some(self.service_key.clone()), ..AuthConfig::default() }
    }

    async fn start_at(
        addr: SocketAddr,
        data_dir: tempfile::TempDir,
        extra_env: Vec<(String, String)>,
        service_key: ServiceKey,
    ) -> Self {
        let listen = ("IDENTITY_LISTEN_ADDR".to_string(), addr.to_string());
        let config = identity::testing::config(
            data_dir.path(),
            std::iter::once(listen).chain(extra_env.iter().cloned()),
        )
        .expect("test configuration is valid");
        let server = TestServer::start(&config).await.expect("identity server serves");
        Self { addr: server.addr(), data_dir, extra_env, server, service_key }
    }

    /// Stops the server (streams end, in-flight calls finish); its address stays free.
    pub async fn stop(&mut self) {
        self.server.stop().await.expect("identity server stops cleanly");
    }

    /// Starts the server again on the same address and state, with `env` added.
    pub async fn restart_with(mut self, env: &[(&str, String)]) -> Self {
        self.stop().await;
        let mut extra_env = std::mem::take(&mut self.extra_env);
        extra_env.extend(env.iter().map(|(name, value)| (name.to_string(), value.clone())));
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"));
        let service_key = self.service_key.clone();
        Self::start_at(self.addr, data_dir, extra_env, service_key).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("valid URL").connect_lazy()
    }

    /// Signs up a user with a unique email and logs in.
    pub async fn signed_in_user(&self) -> LoginResponse {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let mut auth = AuthServiceClient::new(self.channel());
        let signup =
            SignupRequest { email: email.clone(), password: PASSWORD.into(), full_name: "Test User".into() };
        auth.signup(signup).await.expect("signup succeeds");
        self.login(&email).await
    }

    pub async fn login(&self, email: &str) -> LoginResponse {
        let mut auth = AuthServiceClient::new(self.channel());
        let login = LoginRequest { email: email.into(), password: PASSWORD.into() };
        auth.login(login).await.expect("login succeeds").into_inner()
    }

    pub async fn logout(&self, refresh_token: &str) {
        let mut auth = AuthServiceClient::new(self.channel());
        auth.logout(LogoutRequest { refresh_token: refresh_token.into() }).await.expect("logout succeeds");
    }

    /// The key id of the signing key (GetJwks lists it first).
    pub async fn signing_kid(&self) -> String {
        let mut tokens = TokenServiceClient::new(self.channel());
        let jwks = tokens.get_jwks(GetJwksRequest {}).await.expect("GetJwks succeeds").into_inner();
        jwks.keys.first().expect("a key").kid.clone()
    }

    /// The key the server generated in its data dir on first start.
    pub fn signing_key_file(&self) -> PathBuf {
        self.data_dir.path().join("signing_key.pem")
    }
}

/// The example service, behind the layer, connected to an identity server.
pub struct ProtectedService {
    pub auth: IdentityAuth,
    channel: Channel,
    _stop: oneshot::Sender<()>,
}

impl ProtectedService {
    pub async fn start(identity: &IdentityServer, config: AuthConfig) -> Self {
        let auth = IdentityAuth::connect_to(&identity.url(), config).await.expect("the layer connects");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = auth.clone();
        tokio::spawn(async move {
            whoami::serve(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .expect("protected service runs");
        });
        let channel = Channel::from_shared(format!("http://{addr}")).expect("valid URL").connect_lazy();
        Self { auth, channel, _stop: stop }
    }

    /// Starts it with the default configuration and waits until it knows every revocation.
    pub async fn start_synchronised(identity: &IdentityServer) -> Self {
        let service = Self::start(identity, identity.auth_config()).await;
        assert!(
            service.auth.wait_until_synchronised(Duration::from_secs(10)).await,
            "revocations synchronised"
        );
        service
    }

    /// Calls `/example.v1.WhoAmI/Get` with `authorization: <value>` (or none); the answer is
    /// the caller's user id.
    pub async fn who_am_i(&self, authorization: Option<&str>) -> Result<String, Status> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(whoami::GET_PATH);
        let codec = tonic_prost::ProstCodec::<(), String>::default();
        Ok(grpc.unary(request, path, codec).await?.into_inner())
    }

    pub async fn as_bearer(&self, access_token: &str) -> Result<String, Status> {
        self.who_am_i(Some(&format!("Bearer {access_token}"))).await
    }
}

/// Claims like the server's, valid from now for 10 minutes; `changes` overrides fields.
pub fn claims(changes: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": "identity",
        "sub": Uuid::new_v4().to_string(),
        "aud": "identity",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": Uuid::new_v4().to_string(),
        "sid": Uuid::new_v4().to_string(),
        "email": "signed-here@example.com",
        "name": "Signed Here",
    });
    if let (Some(claims), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        claims.extend(changes);
    }
    claims
}

/// An access token over `claims`, signed with the PKCS#8 PEM key in `key_file`, with the
/// header the server uses (EdDSA, `typ: at+jwt`, `kid`).
pub fn sign(key_file: &std::path::Path, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(key_file).expect("read key file");
    let key = EncodingKey::from_ed_pem(&pem).expect("Ed25519 PEM key");
    let header =
        Header { typ: Some("at+jwt".into()), kid: Some(kid.into()), ..Header::new(Algorithm::EdDSA) };
    jsonwebtoken::encode(&header, claims, &key).expect("token signs")
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// Asserts the call was refused UNAUTHENTICATED with `reason`.
#[track_caller]
pub fn assert_refused(result: Result<String, Status>, reason: &str) {
    match result {
        Ok(answer) => panic!("expected UNAUTHENTICATED {reason:?}, got Ok({answer:?})"),
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "unexpected status: {status:?}");
            assert_eq!(status.message(), reason, "unexpected reason");
        }
    }
}
