//! Token scenarios: what the server spends per ValidateToken, ext_authz Check, GetJwks and
//! RefreshToken, beside a bare tonic echo of the same shape in this process, so that the figure
//! that matters is a ratio to what tonic serves on this machine, not the machine's speed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Request as AttributeRequest},
};
use identity::{
    proto::{
        Claims, GetJwksRequest, GetJwksResponse, LoginRequest, RefreshTokenRequest, ValidateTokenRequest,
        ValidateTokenResponse,
        auth_service_client::AuthServiceClient,
        token_service_client::TokenServiceClient,
        token_service_server::{TokenService, TokenServiceServer},
    },
    service::Identity,
    tokens::AccessTokenSubject,
};
use tonic::{Request, Response, Status, transport::Channel};

use super::{
    Args, lean,
    runner::{BoxedCall, median, run},
    server::{PASSWORD, Server, channels},
};

/// Requests/s of every round of the alternating rows, for the ratios of their medians.
#[derive(Default)]
pub(super) struct Rounds {
    echo: Vec<f64>,
    validate: Vec<f64>,
    check: Vec<f64>,
}

/// echo, ValidateToken repeated and ext_authz Check (those wanted), one of each in every one of
/// --rounds rounds, alternated so that drift on a shared machine hits them alike.
pub(super) async fn alternating_rounds(
    args: &Args,
    wants: impl Fn(&str) -> bool,
    identity: &Identity,
    channels: &Arc<Vec<Channel>>,
) -> Rounds {
    let mut rounds = Rounds::default();
    let echo_channels =
        if wants("echo") { Some(Arc::new(start_echo(identity, args.connections).await)) } else { None };
    let sample = mint_tokens(identity, 1).remove(0);
    for _ in 0..args.rounds.max(1) {
        if let Some(echo_channels) = &echo_channels {
            let load = validate_load(Arc::clone(echo_channels), std::slice::from_ref(&sample));
            let report = run("echo (bare tonic)", args.concurrency, args.duration, load).await;
            report.print();
            rounds.echo.push(report.rps());
        }
        if wants("validate-repeated") {
            let load = validate_load(Arc::clone(channels), std::slice::from_ref(&sample));
            let report = run("ValidateToken repeated", args.concurrency, args.duration, load).await;
            report.print();
            rounds.validate.push(report.rps());
        }
        if wants("ext-authz") {
            let channels = Arc::clone(channels);
            let request = lean::Unary::new(CHECK, &check_request(&sample));
            let report = run("ext_authz Check repeated", args.concurrency, args.duration, move |task, _| {
                let (channel, request) = (channels[task % channels.len()].clone(), request.clone());
                async move {
                    let response: lean::CheckStatus = request.call(channel).await?;
                    if response.allowed() { Ok(()) } else { Err(Status::internal("denied")) }
                }
            })
            .await;
            report.print();
            rounds.check.push(report.rps());
        }
    }
    rounds
}

impl Rounds {
    /// The ratios docs/benchmarks.md quotes, for the rows that ran.
    pub(super) fn print_ratios(mut self) {
        if let (Some(validate), Some(echo)) = (median(&mut self.validate), median(&mut self.echo)) {
            println!(
                "ratio ValidateToken (repeated) / echo: {:.2} (medians of {} rounds: {validate:.0} / {echo:.0} requests/s)",
                validate / echo,
                self.validate.len()
            );
        }
        if let (Some(check), Some(echo)) = (median(&mut self.check), median(&mut self.echo)) {
            println!(
                "ratio ext_authz Check (repeated) / echo: {:.2} (medians of {} rounds: {check:.0} / {echo:.0} requests/s)",
                check / echo,
                self.check.len()
            );
        }
        if let (Some(check), Some(validate)) = (median(&mut self.check), median(&mut self.validate)) {
            println!("ratio ext_authz Check / ValidateToken (repeated): {:.2}", check / validate);
        }
    }
}

/// GetJwks: the key set every verifier of our tokens fetches and refetches.
pub(super) async fn jwks(args: &Args, channels: &Arc<Vec<Channel>>) {
    let channels = Arc::clone(channels);
    run("GetJwks", args.concurrency, args.duration, move |task, _| {
        let mut client = TokenServiceClient::new(channels[task % channels.len()].clone());
        async move { client.get_jwks(GetJwksRequest {}).await.map(drop) }
    })
    .await
    .print();
}

/// RefreshToken, each task following its own session's rotation chain.
pub(super) async fn refresh(args: &Args, channels: &Arc<Vec<Channel>>, users: &[String]) {
    let mut auth = AuthServiceClient::new(channels[0].clone());
    let mut chains = Vec::new();
    for task in 0..args.concurrency {
        let request = LoginRequest { email: users[task % users.len()].clone(), password: PASSWORD.into() };
        chains.push(tokio::sync::Mutex::new(
            auth.login(request).await.expect("login").into_inner().tokens.unwrap().refresh_token,
        ));
    }
    let chains = Arc::new(chains);
    let channels = Arc::clone(channels);
    run("RefreshToken", args.concurrency, args.duration, move |task, _| {
        let mut client = AuthServiceClient::new(channels[task % channels.len()].clone());
        let chains = Arc::clone(&chains);
        async move {
            let mut current = chains[task].lock().await;
            let request = RefreshTokenRequest { refresh_token: current.clone() };
            let tokens = client.refresh_token(request).await?.into_inner().tokens.unwrap();
            *current = tokens.refresh_token;
            Ok(())
        }
    })
    .await
    .print();
}

/// A tonic service that answers ValidateToken with a canned active response: no parsing, no
/// crypto, no lookup. The ceiling for a unary call of the same shape on this machine.
struct Echo {
    response: ValidateTokenResponse,
}

#[tonic::async_trait]
impl TokenService for Echo {
    type WatchRevocationsStream =
        tokio_stream::Empty<Result<identity::proto::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<identity::proto::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }

    async fn validate_token(
        &self,
        _: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }

    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse::default()))
    }
}

/// Serves [`Echo`] on an ephemeral port, answering with the claims of a real token.
pub(super) async fn start_echo(identity: &Identity, connections: usize) -> Vec<Channel> {
    let sample = mint_tokens(identity, 1).remove(0);
    let claims = identity.validate(&sample).expect("active").claims.clone();
    let response = ValidateTokenResponse { active: true, claims: Some(claims_message(&claims)) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TokenServiceServer::new(Echo { response }))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    channels(addr, connections).await
}

fn claims_message(claims: &identity::tokens::AccessClaims) -> Claims {
    identity::rpc::token_claims_message(claims)
}

/// `count` distinct valid access tokens, signed in process (ValidateToken needs no session row)
/// on every core: an RS256 signature costs milliseconds, and validate-new needs thousands.
pub(super) fn mint_tokens(identity: &Identity, count: usize) -> Vec<String> {
    let now = identity.now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, count.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let share = count / threads + usize::from(worker < count % threads);
                scope.spawn(move || (0..share).map(|_| mint_token(identity, now)).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("minting thread")).collect()
    })
}

fn mint_token(identity: &Identity, now: chrono::DateTime<chrono::Utc>) -> String {
    let subject = AccessTokenSubject {
        user_id: identity::domain::UserId::new(),
        email: "bench@example.com",
        full_name: "Bench",
        email_verified: true,
        session_id: identity::domain::SessionId::new(),
        session_expires_at: now + chrono::TimeDelta::days(1),
        roles: &[],
        auth_time: now,
        second_factor: false,
    };
    identity.tokens().issue(&subject, now).expect("sign").token
}

/// ValidateToken with a token the server has not verified before, each time: on a server of its
/// own (with the same `--env`) whose token cache is off, so that a pool of 1,000 tokens, taken in
/// turn, stands for endless new ones (minting tens of thousands took minutes with RS256). What
/// it leaves out is the cache's miss and insert, a microsecond beside the signature check.
pub(super) async fn validate_new(args: &Args) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(args, args.cost, &data_dir, &[("IDENTITY_TOKEN_CACHE_SIZE", "0")]).await;
    let identity = Arc::clone(&server.identity);
    let minting = Instant::now();
    let tokens = Arc::new(tokio::task::spawn_blocking(move || mint_tokens(&identity, 1_000)).await.unwrap());
    println!("(minted {} {} tokens in {:.1?})", tokens.len(), server.config.signing_alg, minting.elapsed());
    let channels = Arc::new(channels(server.addr, args.connections).await);
    run("ValidateToken new tokens", args.concurrency, args.duration, validate_load(channels, &tokens))
        .await
        .print();
}

/// ValidateToken called in this process, without gRPC: a cache hit and a signature check.
pub(super) fn in_process(identity: &Identity) {
    const N: usize = 50_000;
    let repeated = mint_tokens(identity, 1).remove(0);
    identity.validate(&repeated).expect("active");
    let started = Instant::now();
    for _ in 0..N {
        identity.validate(&repeated).expect("active");
    }
    let hit = started.elapsed() / N as u32;
    // Few: an RS256 signature costs milliseconds to make.
    let fresh = mint_tokens(identity, 1_000);
    let started = Instant::now();
    for token in &fresh {
        identity.validate(token).expect("active");
    }
    let miss = started.elapsed() / fresh.len() as u32;
    println!(
        "in-process ValidateToken: repeated token (cache hit) {hit:?}/call, new token (signature check) {miss:?}/call"
    );
}

/// ValidateToken over `tokens` on `channels`, each call taking the next token (one token: all
/// repeats); each request encoded once, and only `active` read of the answer (see [`lean`]).
pub(super) fn validate_load(
    channels: Arc<Vec<Channel>>,
    tokens: &[String],
) -> impl Fn(usize, u64) -> BoxedCall + Send + Sync + use<> {
    let requests: Arc<Vec<lean::Unary>> =
        Arc::new(tokens.iter().map(|token| validate_request(token)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    move |task, _| {
        let channel = channels[task % channels.len()].clone();
        let request = requests[next.fetch_add(1, Ordering::Relaxed) % requests.len()].clone();
        Box::pin(async move { active(request.call(channel).await?) })
    }
}

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

const VALIDATE_TOKEN: &str = "/identity.v1.TokenService/ValidateToken";

/// ValidateToken of `token`, encoded once (see [`lean`]).
fn validate_request(token: &str) -> lean::Unary {
    lean::Unary::new(VALIDATE_TOKEN, &ValidateTokenRequest { access_token: token.to_owned() })
}

fn active(response: lean::Active) -> Result<(), Status> {
    if response.active { Ok(()) } else { Err(Status::internal("inactive")) }
}

/// A CheckRequest as Envoy sends it for `GET /orders/42` with `authorization: Bearer <token>` and
/// a few ordinary headers.
fn check_request(token: &str) -> CheckRequest {
    let headers = [
        ("authorization", format!("Bearer {token}")),
        (":authority", "shop.example.com".to_owned()),
        (":method", "GET".to_owned()),
        (":path", "/orders/42".to_owned()),
        ("accept", "application/json".to_owned()),
        ("user-agent", "bench/1.0".to_owned()),
        ("x-request-id", "7f1c2d9e-4b7a-4c55-9e0f-1a2b3c4d5e6f".to_owned()),
    ];
    let http = HttpRequest {
        method: "GET".into(),
        path: "/orders/42".into(),
        host: "shop.example.com".into(),
        headers: headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
        ..HttpRequest::default()
    };
    let request = AttributeRequest { http: Some(http), ..AttributeRequest::default() };
    CheckRequest {
        attributes: Some(AttributeContext { request: Some(request), ..AttributeContext::default() }),
    }
}
