//! What crosses the wire: TLS and mutual TLS, handshake deadlines under TLS, request size limits,
//! request ids.

use std::{net::SocketAddr, time::Duration};

use identity::{
    proto::{
        SignupRequest, WatchRevocationsRequest, auth_service_client::AuthServiceClient,
        token_service_client::TokenServiceClient,
    },
    testing::TestServer,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity as ClientIdentity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    connections::closed_by_server,
    helpers::{PASSWORD, TestApp, TestDatabase, assert_code},
    on_both_backends,
};

on_both_backends!(
    an_oversized_request_is_resource_exhausted_and_the_server_stays_healthy,
    request_ids_are_echoed_or_made,
);

async fn an_oversized_request_is_resource_exhausted_and_the_server_stays_healthy(app: TestApp) {
    let request = SignupRequest {
        email: "big@example.com".into(),
        password: PASSWORD.into(),
        full_name: "x".repeat(8 << 20),
    };
    let status = assert_code(app.auth().signup(request).await, Code::ResourceExhausted);
    assert!(status.message().contains("too large"), "{}", status.message());
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest { service: "identity.v1.AuthService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    assert!(app.signup("small@example.com", PASSWORD, "Small").await.is_ok());
}

async fn request_ids_are_echoed_or_made(app: TestApp) {
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.metadata_mut().insert("x-request-id", "trace-me-42".parse().unwrap());
    let response = HealthClient::new(app.channel.clone()).check(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "trace-me-42");

    let status =
        assert_code(app.login("nobody@example.com", "whatever-password").await, Code::Unauthenticated);
    let made = status.metadata().get("x-request-id").expect("a generated request id").to_str().unwrap();
    assert!(made.parse::<uuid::Uuid>().is_ok(), "{made}");
}

/// A test CA with a server certificate for `localhost` and client certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    ca_issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let (ca, ca_issuer) = Self::authority("identity test CA");
        Self { dir: tempfile::tempdir().unwrap(), ca, ca_issuer }
    }

    fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    }

    /// A leaf certificate and key (PEM) signed by `issuer`.
    fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `pem` readable by its owner only, as the server requires of a private key.
    fn write(&self, name: &str, pem: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    /// A client certificate whose only name is the URI subject alternative name `uri`.
    fn client_with_uri(&self, uri: &str) -> ClientIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        ClientIdentity::from_pem(cert.pem(), key.serialize_pem())
    }

    /// A client certificate whose DNS subject alternative name is `name`.
    fn client_named(&self, name: &str) -> ClientIdentity {
        let (cert, key) = Self::leaf(&self.ca_issuer, name, ExtendedKeyUsagePurpose::ClientAuth);
        ClientIdentity::from_pem(cert, key)
    }

    fn client(&self) -> ClientIdentity {
        let (cert, key) = Self::leaf(&self.ca_issuer, "client", ExtendedKeyUsagePurpose::ClientAuth);
        ClientIdentity::from_pem(cert, key)
    }

    /// Server settings: TLS with a `localhost` certificate, and mutual TLS if asked.
    fn server_env(&self, mutual: bool) -> Vec<(String, String)> {
        let (cert, key) = Self::leaf(&self.ca_issuer, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let mut env = vec![
            ("IDENTITY_TLS_CERT_FILE".to_string(), self.write("server.pem", &cert)),
            ("IDENTITY_TLS_KEY_FILE".to_string(), self.write("server.key", &key)),
            ("IDENTITY_HEALTH_LISTEN_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ];
        if mutual {
            env.push(("IDENTITY_TLS_CLIENT_CA_FILE".into(), self.write("ca.pem", &self.ca)));
        }
        env
    }
}

/// Starts a server with `env` (on SQLite: TLS does not depend on the store) and returns its
/// API and health addresses, and what keeps it running.
async fn start_tls_server(
    env: Vec<(String, String)>,
) -> (SocketAddr, SocketAddr, (TestServer, TestDatabase)) {
    let data_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data_dir.path().join("identity.db").display());
    let db = TestDatabase::new(url, data_dir);
    let server = TestServer::start(&TestApp::config(&db, &env)).await.unwrap();
    let (addr, health_addr) = (server.addr(), server.health_addr().unwrap());
    (addr, health_addr, (server, db))
}

async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<ClientIdentity>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    endpoint.timeout(Duration::from_secs(5)).connect().await.map_err(|e| e.to_string())
}

async fn signup_over(channel: Channel) -> Result<(), tonic::Status> {
    let email = format!("tls-{}@example.com", uuid::Uuid::new_v4().simple());
    let request = SignupRequest { email, password: PASSWORD.into(), full_name: "TLS".into() };
    AuthServiceClient::new(channel).signup(request).await.map(drop)
}

async fn plaintext_health(addr: SocketAddr) -> Result<ServingStatus, String> {
    let channel =
        Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.map_err(|e| e.to_string())?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| status.to_string())?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_api_and_refuses_plaintext() {
    let pki = Pki::new();
    let (addr, health_addr, _server) = start_tls_server(pki.server_env(false)).await;
    let channel = tls_channel(addr, &pki.ca, None).await.unwrap();
    signup_over(channel).await.expect("a TLS client gets in");
    assert!(plaintext_health(addr).await.is_err(), "plaintext on the TLS port must fail");
    // Probes that cannot speak TLS use the health-only plaintext listener.
    assert_eq!(plaintext_health(health_addr).await.unwrap(), ServingStatus::Serving);
    assert!(identity::cli::healthcheck(health_addr, "").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_lets_in_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let (addr, _, _server) = start_tls_server(pki.server_env(true)).await;

    let trusted = tls_channel(addr, &pki.ca, Some(pki.client())).await.unwrap();
    signup_over(trusted).await.expect("a client with a certificate from the CA gets in");

    let refused = match tls_channel(addr, &pki.ca, None).await {
        Err(_) => true,
        Ok(channel) => signup_over(channel).await.is_err(),
    };
    assert!(refused, "a client without a certificate got in");

    let (_, rogue_ca) = Pki::authority("rogue CA");
    let (cert, key) = Pki::leaf(&rogue_ca, "client", ExtendedKeyUsagePurpose::ClientAuth);
    let refused = match tls_channel(addr, &pki.ca, Some(ClientIdentity::from_pem(cert, key))).await {
        Err(_) => true,
        Ok(channel) => signup_over(channel).await.is_err(),
    };
    assert!(refused, "a client with a certificate from another CA got in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_tls_and_health_listeners_are_closed_and_mtls_still_works() {
    let pki = Pki::new();
    let mut env = pki.server_env(true);
    env.push(("IDENTITY_HANDSHAKE_TIMEOUT".into(), "200ms".into()));
    let (addr, health_addr, _db) = start_tls_server(env).await;
    // One that says nothing, one that stops after its ClientHello-sized first bytes.
    closed_by_server(TcpStream::connect(addr).await.unwrap()).await;
    let mut stalling = TcpStream::connect(addr).await.unwrap();
    stalling.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01]).await.unwrap();
    closed_by_server(stalling).await;
    closed_by_server(TcpStream::connect(health_addr).await.unwrap()).await;

    let trusted = tls_channel(addr, &pki.ca, Some(pki.client())).await.unwrap();
    signup_over(trusted).await.expect("a client with a certificate from the CA still gets in");
    assert_eq!(plaintext_health(health_addr).await.unwrap(), ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_client_certificate_may_watch_and_another_from_the_same_ca_may_not() {
    let pki = Pki::new();
    let mut env = pki.server_env(true);
    let spiffe = "spiffe://example.org/ns/shop/sa/orders";
    env.push((
        "IDENTITY_MTLS_CALLERS".into(),
        format!("gateway.internal=watch_revocations; {spiffe}=watch_revocations; billing.internal=admin"),
    ));
    let (addr, _, _server) = start_tls_server(env).await;
    let ca = pki.ca.clone();
    let watch = |identity| {
        let ca = ca.clone();
        async move {
            let channel = tls_channel(addr, &ca, Some(identity)).await.unwrap();
            TokenServiceClient::new(channel).watch_revocations(WatchRevocationsRequest { since: 0 }).await
        }
    };

    for (who, identity) in
        [("a DNS name", pki.client_named("gateway.internal")), ("a SPIFFE id", pki.client_with_uri(spiffe))]
    {
        let mut stream =
            watch(identity).await.unwrap_or_else(|status| panic!("{who}: {status:?}")).into_inner();
        let first = stream.message().await.unwrap().expect("a catch-up message");
        assert!(first.caught_up, "{who}");
    }
    let status = assert_code(watch(pki.client_named("intruder.internal")).await, Code::PermissionDenied);
    assert!(status.message().contains("not allow-listed"), "{}", status.message());
    // Listed, but for something else.
    assert_code(watch(pki.client_named("billing.internal")).await, Code::PermissionDenied);
    // Over mutual TLS the certificate is the credential; signing up still needs none.
    let channel = tls_channel(addr, &pki.ca, Some(pki.client_named("intruder.internal"))).await.unwrap();
    signup_over(channel).await.expect("the API itself stays open to any client of the CA");
}
