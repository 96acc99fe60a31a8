//! Configuration from `IDENTITY_*` environment variables, parsed once at start into a validated
//! [`Config`]. Each variable is declared once, in the `variables!` list below: its name, its
//! default, what it means, how its text is parsed (errors name the variable) and how
//! `check-config` shows it. The `Config` struct, the parsing, [`Config::describe`] and
//! [`VARIABLES`] (which the README test reads) all come from that list, so adding a variable
//! is one entry there, plus its row in the README table and `.env.example` (a test checks).

mod parse;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use parse::{
    Env, Parse, bounded_duration, custom, duration, in_range, optional, path_list, problem, redact_url,
    show_addr, show_duration, show_path, socket_addr, text,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    clients::TrustedProxies,
    connections::ConnectionLimits,
    domain::{AllowedCertificates, Role},
};

pub const ENV_PREFIX: &str = "IDENTITY_";

/// Where the SQLite file and a generated key live when `IDENTITY_DATA_DIR` is not set; the
/// default database URL is derived from it.
const DEFAULT_DATA_DIR: &str = "./data";

/// One environment variable, for `check-config` and the documentation test.
pub struct Variable {
    pub name: &'static str,
    /// The default as documented (`""`: unset).
    pub default: &'static str,
    pub about: &'static str,
    /// The effective value as `check-config` prints it (secrets redacted).
    show: fn(&Config) -> String,
}

/// Declares the variables: for each `Config` field, its type, how it is parsed, and the one or
/// more variables it is read from (name, documented default, description, how it is shown).
macro_rules! variables {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $parser:expr, [
            $($name:literal, $default:literal, $about:literal, $show:expr;)+
        ]
    )*) => {
        /// What the process runs with. Secrets (the database URL may hold a password) are
        /// `SecretString`.
        #[derive(Debug, Clone)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        /// Every variable, in the order `check-config` prints them.
        pub const VARIABLES: &[Variable] = &[
            $($(Variable { name: $name, default: $default, about: $about, show: $show },)+)*
        ];

        impl Config {
            fn parse(env: &Env) -> Result<Self, ConfigError> {
                Ok(Self {
                    $($field: Parse::<$ty>::parse(&$parser, env, first!($($name, $default;)+))?,)*
                })
            }
        }
    };
}

/// The first `(name, default)` of a field's variables: the one a single-variable parser reads.
macro_rules! first {
    ($name:literal, $default:literal; $($rest:tt)*) => {
        ($name, $default)
    };
}

variables! {
    listen_addr: SocketAddr = text(socket_addr), [
        "IDENTITY_LISTEN_ADDR", "127.0.0.1:50051", "address to serve gRPC on", |c| c.listen_addr.to_string();
    ]
    database_url: SecretString = custom(database_url), [
        "IDENTITY_DATABASE_URL", "sqlite://<DATA_DIR>/identity.db", "postgres://… or sqlite://…; the scheme picks the backend",
            |c| redact_url(c.database_url.expose_secret());
    ]
    database_max_connections: u32 = text(|s| in_range(s, 1, 1000)), [
        "IDENTITY_DATABASE_MAX_CONNECTIONS", "10", "Postgres connection pool size per process",
            |c| c.database_max_connections.to_string();
    ]
    database_acquire_timeout: Duration = text(duration), [
        "IDENTITY_DATABASE_ACQUIRE_TIMEOUT", "5s", "how long a request waits for a pooled connection",
            |c| show_duration(c.database_acquire_timeout);
    ]
    // A blackholed server never answers, so this bound is enforced by the client; on Postgres it
    // is also the server's `statement_timeout`.
    database_statement_timeout: Duration = text(|s| {
        bounded_duration(s, Duration::from_millis(100), Duration::from_secs(600))
    }), [
        "IDENTITY_DATABASE_STATEMENT_TIMEOUT", "5s", "how long one database call's statements may take before UNAVAILABLE",
            |c| show_duration(c.database_statement_timeout);
    ]
    data_dir: PathBuf = text(|s| Ok(PathBuf::from(s))), [
        "IDENTITY_DATA_DIR", "./data", "where the SQLite file and a generated signing key live",
            |c| c.data_dir.display().to_string();
    ]
    signing_key_file: Option<PathBuf> = optional(|s| Ok(PathBuf::from(s))), [
        "IDENTITY_SIGNING_KEY_FILE", "", "PKCS#8 PEM key (Ed25519, P-256 or RSA, as IDENTITY_SIGNING_ALG says) that signs access tokens",
            |c| show_path(c.signing_key_file.as_ref());
    ]
    signing_alg: identity_contract::SigningAlgorithm = text(|s| {
        identity_contract::SigningAlgorithm::from_name(s).ok_or_else(|| "must be `EdDSA`, `ES256` or `RS256`".to_string())
    }), [
        "IDENTITY_SIGNING_ALG", "EdDSA", "algorithm of new access tokens: EdDSA, ES256 or RS256 (the signing key must be of its kind)",
            |c| c.signing_alg.to_string();
    ]
    verify_key_files: Vec<PathBuf> = text(|s| Ok(path_list(s))), [
        "IDENTITY_VERIFY_KEY_FILES", "", "comma-separated PEM keys that still verify tokens but no longer sign",
            |c| c.verify_key_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    ]
    encryption_key_file: Option<PathBuf> = optional(|s| Ok(PathBuf::from(s))), [
        "IDENTITY_ENCRYPTION_KEY_FILE", "", "32-byte key (base64) that seals TOTP secrets at rest; unset: generated into the data dir on SQLite, second factor unavailable on Postgres",
            |c| show_path(c.encryption_key_file.as_ref());
    ]
    decryption_key_files: Vec<PathBuf> = text(|s| Ok(path_list(s))), [
        "IDENTITY_DECRYPTION_KEY_FILES", "", "comma-separated former encryption keys: still open TOTP secrets, which are re-sealed under the current key at their next use",
            |c| c.decryption_key_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    ]
    totp_issuer: String = text(totp_issuer), [
        "IDENTITY_TOTP_ISSUER", "identity", "the issuer an authenticator app shows for a TOTP enrolment (no `:`)",
            |c| c.totp_issuer.clone();
    ]
    issuer: String = text(|s| Ok(s.to_owned())), [
        "IDENTITY_ISSUER", "identity", "`iss` of issued tokens, required on validation", |c| c.issuer.clone();
    ]
    audience: String = text(|s| Ok(s.to_owned())), [
        "IDENTITY_AUDIENCE", "identity", "`aud` of issued tokens, required on validation", |c| c.audience.clone();
    ]
    access_token_ttl: Duration = text(|s| bounded_duration(s, Duration::from_secs(1), identity_contract::MAX_ACCESS_TOKEN_LIFETIME)), [
        "IDENTITY_ACCESS_TOKEN_TTL", "15m", "access token lifetime", |c| show_duration(c.access_token_ttl);
    ]
    refresh_token_ttl: Duration = text(|s| {
        bounded_duration(s, Duration::from_secs(1), Duration::from_secs(365 * 24 * 3600))
    }), [
        "IDENTITY_REFRESH_TOKEN_TTL", "30d", "session (refresh token) lifetime", |c| show_duration(c.refresh_token_ttl);
    ]
    bcrypt_cost: u32 = text(|s| in_range(s, 4, 31)), [
        "IDENTITY_BCRYPT_COST", "12", "bcrypt cost", |c| c.bcrypt_cost.to_string();
    ]
    // 64 leaves room under bcrypt's 71-byte ceiling even for one-byte characters.
    password_min_length: usize = text(|s| in_range(s, 8, 64)), [
        "IDENTITY_PASSWORD_MIN_LENGTH", "15", "minimum password length in characters",
            |c| c.password_min_length.to_string();
    ]
    hash_threads: usize = custom(|env| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        env.parse("IDENTITY_HASH_THREADS", &cores.to_string(), |s| in_range(s, 1, 256))
    }), [
        "IDENTITY_HASH_THREADS", "number of cores", "threads that run bcrypt", |c| c.hash_threads.to_string();
    ]
    /// `None`: sized from the measured cost of one hash (see `passwords::TARGET_MAX_WAIT`).
    hash_queue: Option<usize> = optional(|s| in_range(s, 0, 100_000)), [
        "IDENTITY_HASH_QUEUE", "auto", "bcrypt jobs that may wait before requests are shed",
            |c| c.hash_queue.map_or("auto (1.5 s of work)".into(), |q| q.to_string());
    ]
    token_cache_size: usize = text(|s| in_range(s, 0, 10_000_000)), [
        "IDENTITY_TOKEN_CACHE_SIZE", "10000", "verified access tokens remembered", |c| c.token_cache_size.to_string();
    ]
    session_purge_interval: Duration = text(|s| {
        bounded_duration(s, Duration::from_millis(100), Duration::from_secs(7 * 24 * 3600))
    }), [
        "IDENTITY_SESSION_PURGE_INTERVAL", "1h", "how often old sessions are deleted",
            |c| show_duration(c.session_purge_interval);
    ]
    // OWASP and NIST SP 800-63B-4: slow each client down on each email, and lock the email
    // itself only after many consecutive failures from everyone (see `service::throttle`).
    login_free_failures: u32 = text(|s| in_range(s, 1, 1_000_000)), [
        "IDENTITY_LOGIN_FREE_FAILURES", "3", "failed logins one client may make on one email before it must wait",
            |c| c.login_free_failures.to_string();
    ]
    login_delay: Duration = text(|s| {
        bounded_duration(s, Duration::from_secs(1), Duration::from_secs(24 * 3600))
    }), [
        "IDENTITY_LOGIN_DELAY", "1m", "the first wait after the free failures; each further failure doubles it",
            |c| show_duration(c.login_delay);
    ]
    login_max_delay: Duration = text(|s| {
        bounded_duration(s, Duration::from_secs(1), Duration::from_secs(24 * 3600))
    }), [
        "IDENTITY_LOGIN_MAX_DELAY", "1h", "the longest wait between two attempts of one client on one email",
            |c| show_duration(c.login_max_delay);
    ]
    // NIST SP 800-63B-4 section 3.2.2: no more than 100 consecutive failed attempts.
    lockout_threshold: u32 = text(|s| in_range(s, 0, 100)), [
        "IDENTITY_LOCKOUT_THRESHOLD", "100", "consecutive failed logins on one email, from all clients, that lock it; 0: never",
            |c| c.lockout_threshold.to_string();
    ]
    lockout_duration: Duration = text(|s| {
        bounded_duration(s, Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600))
    }), [
        "IDENTITY_LOCKOUT_DURATION", "15m", "how long an email stays locked once it reaches the threshold",
            |c| show_duration(c.lockout_duration);
    ]
    signup_reveals_accounts: bool = text(boolean), [
        "IDENTITY_SIGNUP_REVEALS_ACCOUNTS", "true", "`false`: Signup of a taken email answers like a successful one",
            |c| c.signup_reveals_accounts.to_string();
    ]
    tls: Option<TlsFiles> = custom(tls_files), [
        "IDENTITY_TLS_CERT_FILE", "", "PEM certificate chain: serve TLS",
            |c| show_path(c.tls.as_ref().map(|t| &t.cert_file));
        "IDENTITY_TLS_KEY_FILE", "", "PEM private key for the certificate",
            |c| show_path(c.tls.as_ref().map(|t| &t.key_file));
        "IDENTITY_TLS_CLIENT_CA_FILE", "", "PEM CA: mutual TLS",
            |c| show_path(c.tls.as_ref().and_then(|t| t.client_ca_file.as_ref()));
    ]
    health_listen_addr: Option<SocketAddr> = optional(socket_addr), [
        "IDENTITY_HEALTH_LISTEN_ADDR", "", "extra plaintext listener serving only grpc.health.v1",
            |c| show_addr(c.health_listen_addr);
    ]
    health_check_interval: Duration = text(|s| {
        bounded_duration(s, Duration::from_millis(100), Duration::from_secs(3600))
    }), [
        "IDENTITY_HEALTH_CHECK_INTERVAL", "5s", "how often the database is pinged for health",
            |c| show_duration(c.health_check_interval);
    ]
    metrics_addr: Option<SocketAddr> = optional(socket_addr), [
        "IDENTITY_METRICS_ADDR", "", "serve Prometheus metrics at http://ADDR/metrics", |c| show_addr(c.metrics_addr);
    ]
    http_addr: Option<SocketAddr> = optional(socket_addr), [
        "IDENTITY_HTTP_ADDR", "", "serve /.well-known/jwks.json and /.well-known/openid-configuration at http://ADDR (may equal IDENTITY_METRICS_ADDR)",
            |c| show_addr(c.http_addr);
    ]
    public_url: Option<String> = custom(public_url), [
        "IDENTITY_PUBLIC_URL", "", "the URL clients reach IDENTITY_HTTP_ADDR by, for jwks_uri; unset: http://ADDR",
            |c| c.public_url.clone().unwrap_or_default();
    ]
    // Well under the idle timeouts of common proxies and load balancers (60 s and up).
    revocation_heartbeat: Duration = text(|s| {
        bounded_duration(s, Duration::from_millis(100), Duration::from_secs(300))
    }), [
        "IDENTITY_REVOCATION_HEARTBEAT", "10s", "how often an idle WatchRevocations or WatchUserEvents stream gets a heartbeat",
            |c| show_duration(c.revocation_heartbeat);
    ]
    handshake_timeout: Duration = text(|s| {
        bounded_duration(s, Duration::from_millis(100), Duration::from_secs(300))
    }), [
        "IDENTITY_HANDSHAKE_TIMEOUT", "5s", "a new connection silent past this (no HTTP/2 preface or TLS handshake) is closed",
            |c| show_duration(c.handshake_timeout);
    ]
    // About 17 KiB each when idle: 1000 fit a 128 MiB pod with room for the rest.
    max_connections: usize = text(|s| in_range(s, 1, 1_000_000)), [
        "IDENTITY_MAX_CONNECTIONS", "1000", "open connections per listener; more are closed at once",
            |c| c.max_connections.to_string();
    ]
    max_connections_per_client: usize = text(|s| in_range(s, 1, 1_000_000)), [
        "IDENTITY_MAX_CONNECTIONS_PER_CLIENT", "100", "open connections per client address; more are closed at once",
            |c| c.max_connections_per_client.to_string();
    ]
    reflection: bool = text(boolean), [
        "IDENTITY_REFLECTION", "true", "serve gRPC server reflection", |c| c.reflection.to_string();
    ]
    trusted_proxies: TrustedProxies = text(TrustedProxies::parse), [
        "IDENTITY_TRUSTED_PROXIES", "", "comma-separated IPs and CIDR blocks of proxies whose x-forwarded-for names the client",
            |c| c.trusted_proxies.to_string();
    ]
    /// Client-certificate names let in to the service-facing RPCs, with their permissions.
    mtls_callers: AllowedCertificates = custom(mtls_callers), [
        "IDENTITY_MTLS_CALLERS", "", "`NAME=PERMISSION[,PERMISSION]` entries separated by `;`: client-certificate CN, DNS or URI SANs let in to service-facing RPCs",
            |c| c.mtls_callers.to_string();
    ]
    /// The role whose holders' access tokens are admin callers.
    admin_role: Role = text(|s| Role::parse("IDENTITY_ADMIN_ROLE", s).map_err(|v| v.description)), [
        "IDENTITY_ADMIN_ROLE", "identity.admin", "the role that makes a person's access token an admin caller (the `admin` permission)",
            |c| c.admin_role.to_string();
    ]
    /// The role a token needs for Envoy's Check to allow its request.
    ext_authz_required_role: Option<Role> = optional(|s| Role::parse("IDENTITY_EXT_AUTHZ_REQUIRED_ROLE", s).map_err(|v| v.description)), [
        "IDENTITY_EXT_AUTHZ_REQUIRED_ROLE", "", "a role a token must carry for Envoy's ext_authz Check to allow its request (403 without it); unset: any active token",
            |c| c.ext_authz_required_role.as_ref().map(Role::to_string).unwrap_or_default();
    ]
    max_streams_per_caller: usize = text(|s| in_range(s, 1, 10_000)), [
        "IDENTITY_MAX_STREAMS_PER_CALLER", "16", "open WatchRevocations and WatchUserEvents streams per service caller",
            |c| c.max_streams_per_caller.to_string();
    ]
    max_streams: usize = text(|s| in_range(s, 1, 1_000_000)), [
        "IDENTITY_MAX_STREAMS", "1000", "open WatchRevocations and WatchUserEvents streams in all",
            |c| c.max_streams.to_string();
    ]
    mail: MailDelivery = custom(mail_delivery), [
        "IDENTITY_MAIL", "auto", "how mail is delivered: `smtp`, `files` (.eml under DATA_DIR/mail), `none`; auto: smtp if IDENTITY_SMTP_URL is set, else files",
            |c| c.mail.name().to_owned();
        "IDENTITY_SMTP_URL", "", "smtps://user:pass@host, smtp://host:587?tls=starttls or smtp://host:25",
            |c| match &c.mail { MailDelivery::Smtp(url) => redact_url(url.expose_secret()), _ => String::new() };
    ]
    mail_from: lettre::message::Mailbox = text(|s| s.parse().map_err(|_| "must be an address such as `Example <no-reply@example.com>`".to_string())), [
        "IDENTITY_MAIL_FROM", "identity <no-reply@localhost>", "the From of every message", |c| c.mail_from.to_string();
    ]
    mail_templates: Option<PathBuf> = optional(|s| Ok(PathBuf::from(s))), [
        "IDENTITY_MAIL_TEMPLATES", "", "directory of templates that replace the built-in ones",
            |c| show_path(c.mail_templates.as_ref());
    ]
    mail_max_attempts: u32 = text(|s| in_range(s, 1, 1000)), [
        "IDENTITY_MAIL_MAX_ATTEMPTS", "12", "delivery attempts before a message is kept as failed",
            |c| c.mail_max_attempts.to_string();
    ]
    smtp_timeout: Duration = text(|s| bounded_duration(s, Duration::from_millis(100), Duration::from_secs(300))), [
        "IDENTITY_SMTP_TIMEOUT", "10s", "bound on each SMTP step (connect, each command)", |c| show_duration(c.smtp_timeout);
    ]
    mail_poll_interval: Duration = text(|s| bounded_duration(s, Duration::from_millis(10), Duration::from_secs(3600))), [
        "IDENTITY_MAIL_POLL_INTERVAL", "5s", "how often the outbox is checked for retries and other replicas' mail",
            |c| show_duration(c.mail_poll_interval);
    ]
    reset_token_ttl: Duration = text(|s| bounded_duration(s, Duration::from_secs(60), Duration::from_secs(24 * 3600))), [
        "IDENTITY_RESET_TOKEN_TTL", "30m", "how long a password-reset link works", |c| show_duration(c.reset_token_ttl);
    ]
    reset_url: String = text(|s| if s.contains("{token}") { Ok(s.to_owned()) } else { Err("must contain {token}".into()) }), [
        "IDENTITY_RESET_URL", "http://localhost:3000/reset-password?token={token}", "the link in a reset message; {token} is replaced by the token",
            |c| c.reset_url.clone();
    ]
    verify_token_ttl: Duration = text(|s| bounded_duration(s, Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600))), [
        "IDENTITY_VERIFY_TOKEN_TTL", "24h", "how long an email verification link works", |c| show_duration(c.verify_token_ttl);
    ]
    verify_url: String = text(|s| if s.contains("{token}") { Ok(s.to_owned()) } else { Err("must contain {token}".into()) }), [
        "IDENTITY_VERIFY_URL", "http://localhost:3000/verify-email?token={token}", "the link in a verification message; {token} is replaced by the token",
            |c| c.verify_url.clone();
    ]
    require_verified_email: bool = text(boolean), [
        "IDENTITY_REQUIRE_VERIFIED_EMAIL", "false", "`true`: Login of an account whose email is not verified answers FAILED_PRECONDITION",
            |c| c.require_verified_email.to_string();
    ]
    reset_requests_max_pending: u32 = text(|s| in_range(s, 1, 1_000_000)), [
        "IDENTITY_RESET_REQUESTS_MAX_PENDING", "10000", "password-reset requests waiting for the mail worker, at most; beyond it RequestPasswordReset answers RESOURCE_EXHAUSTED, whatever the address",
            |c| c.reset_requests_max_pending.to_string();
    ]
    mail_max_per_hour: u32 = text(|s| in_range(s, 1, 10_000)), [
        "IDENTITY_MAIL_MAX_PER_HOUR", "5", "messages of each kind per address per hour; beyond it requests answer OK and send nothing",
            |c| c.mail_max_per_hour.to_string();
    ]
    event_retention: Duration = text(|s| {
        bounded_duration(s, Duration::from_secs(3600), Duration::from_secs(366 * 24 * 3600))
    }), [
        "IDENTITY_EVENT_RETENTION", "7d", "how long user events are kept for WatchUserEvents; an older cursor is OUT_OF_RANGE",
            |c| show_duration(c.event_retention);
    ]
    /// The OTLP/gRPC collector traces are exported to; `None`: no traces.
    otlp_endpoint: Option<String> = optional(otlp_endpoint), [
        "IDENTITY_OTLP_ENDPOINT", "", "export traces over OTLP/gRPC to this collector (`http://otel-collector:4317`); unset: no traces",
            |c| c.otlp_endpoint.clone().unwrap_or_default();
    ]
    log_format: LogFormat = text(|s| match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be `text` or `json`".into()),
    }), [
        "IDENTITY_LOG_FORMAT", "text", "`text` or `json`", |c| format!("{:?}", c.log_format).to_lowercase();
    ]
}

/// PEM files for serving TLS; with `client_ca_file`, only clients presenting a certificate
/// issued by that CA get in (mutual TLS).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

impl Config {
    /// The handshake deadline and connection caps each listener enforces.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            handshake_timeout: self.handshake_timeout,
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
        }
    }
}

/// How messages leave the service.
#[derive(Debug, Clone)]
pub enum MailDelivery {
    /// Over SMTP to this server (the URL may hold a password).
    Smtp(SecretString),
    /// As `.eml` files under `<data_dir>/mail/`: for development.
    Files,
    /// Not at all.
    None,
}

impl MailDelivery {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Smtp(_) => "smtp",
            Self::Files => "files",
            Self::None => "none",
        }
    }
}

/// The lockout variable of old, refused at start with a pointer to its replacements.
const RETIRED_MAX_FAILED_LOGINS: &str = "IDENTITY_MAX_FAILED_LOGINS";

fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be `true` or `false`".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A variable that is set but cannot be used. Its `Display` is the one line printed at start.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given `(name, value)` pairs as if they were the environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let env = Env::new(vars);
        // Its meaning changed (a per-email lock after 5 failures is what issue 15 removed):
        // refuse it rather than ignore it, so an operator reads the migration note.
        if env.get(RETIRED_MAX_FAILED_LOGINS)?.is_some() {
            return Err(problem(
                RETIRED_MAX_FAILED_LOGINS,
                "was replaced: use IDENTITY_LOCKOUT_THRESHOLD (consecutive failures from all clients, \
                 default 100) and IDENTITY_LOGIN_FREE_FAILURES / IDENTITY_LOGIN_DELAY (per client); \
                 see docs/operations.md",
            ));
        }
        Self::parse(&env)
    }

    /// Every setting by its variable name with its effective value, for `identity
    /// check-config`. The database URL's password is redacted; key files are named, never read.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        VARIABLES.iter().map(|variable| (variable.name, (variable.show)(self))).collect()
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.expose_secret().starts_with("postgres")
    }
}

fn database_url(env: &Env) -> Result<SecretString, ConfigError> {
    let url = match env.get("IDENTITY_DATABASE_URL")? {
        Some(url)
            if url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:") =>
        {
            url.to_owned()
        }
        Some(_) => {
            return Err(problem(
                "IDENTITY_DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite://",
            ));
        }
        None => {
            let data_dir = PathBuf::from(env.get("IDENTITY_DATA_DIR")?.unwrap_or(DEFAULT_DATA_DIR));
            format!("sqlite://{}", data_dir.join("identity.db").display())
        }
    };
    Ok(SecretString::from(url))
}

/// An `http://` or `https://` URL with a host: where the OTLP exporter connects.
fn otlp_endpoint(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(s.to_owned()),
        _ => Err("must be an http:// or https:// URL such as http://otel-collector:4317".into()),
    }
}

/// An absolute `http(s)://` URL without query or fragment, kept without its trailing slash;
/// only meaningful when the HTTP listener runs.
fn public_url(env: &Env) -> Result<Option<String>, ConfigError> {
    const NAME: &str = "IDENTITY_PUBLIC_URL";
    let Some(url) = env.get(NAME)? else { return Ok(None) };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(problem(NAME, format!("must start with https:// or http:// (got {url:?})")));
    };
    if rest.is_empty()
        || rest.starts_with('/')
        || url.contains(['?', '#'])
        || url.contains(char::is_whitespace)
    {
        return Err(problem(
            NAME,
            format!("must be an absolute URL with a host and no query or fragment (got {url:?})"),
        ));
    }
    if env.get("IDENTITY_HTTP_ADDR")?.is_none() {
        return Err(problem(NAME, "needs IDENTITY_HTTP_ADDR: it is where the keys are served"));
    }
    Ok(Some(url.trim_end_matches('/').to_owned()))
}

/// The allow-list makes sense only where client certificates are verified.
fn mtls_callers(env: &Env) -> Result<AllowedCertificates, ConfigError> {
    const NAME: &str = "IDENTITY_MTLS_CALLERS";
    let Some(text) = env.get(NAME)? else { return Ok(AllowedCertificates::default()) };
    let callers = AllowedCertificates::parse(text).map_err(|why| problem(NAME, why))?;
    if env.get("IDENTITY_TLS_CLIENT_CA_FILE")?.is_none() {
        return Err(problem(
            NAME,
            "needs IDENTITY_TLS_CLIENT_CA_FILE: only mutual TLS verifies client certificates",
        ));
    }
    Ok(callers)
}

fn mail_delivery(env: &Env) -> Result<MailDelivery, ConfigError> {
    let url = env.get("IDENTITY_SMTP_URL")?;
    if let Some(url) = url
        && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
    {
        return Err(problem("IDENTITY_SMTP_URL", "must start with smtp:// or smtps://"));
    }
    let url = url.map(|url| SecretString::from(url.to_owned()));
    match (env.get("IDENTITY_MAIL")?.unwrap_or("auto"), url) {
        ("auto" | "smtp", Some(url)) => Ok(MailDelivery::Smtp(url)),
        ("smtp", None) => Err(problem("IDENTITY_SMTP_URL", "must be set when IDENTITY_MAIL is smtp")),
        ("auto" | "files", _) => Ok(MailDelivery::Files),
        ("none", _) => Ok(MailDelivery::None),
        _ => Err(problem("IDENTITY_MAIL", "must be `smtp`, `files`, `none` or `auto`")),
    }
}

/// The issuer of an `otpauth://` URI: shown by authenticator apps, and `:` separates it from
/// the account name there (Key Uri Format), so it may not hold one.
fn totp_issuer(text: &str) -> Result<String, String> {
    let issuer = text.trim();
    if issuer.is_empty() || issuer.len() > 64 || issuer.contains(':') {
        return Err("must be 1 to 64 bytes without `:`".into());
    }
    Ok(issuer.to_owned())
}

fn tls_files(env: &Env) -> Result<Option<TlsFiles>, ConfigError> {
    let cert = env.get("IDENTITY_TLS_CERT_FILE")?.map(PathBuf::from);
    let key = env.get("IDENTITY_TLS_KEY_FILE")?.map(PathBuf::from);
    let client_ca_file = env.get("IDENTITY_TLS_CLIENT_CA_FILE")?.map(PathBuf::from);
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles { cert_file, key_file, client_ca_file })),
        (Some(_), None) => {
            Err(problem("IDENTITY_TLS_KEY_FILE", "must be set when IDENTITY_TLS_CERT_FILE is"))
        }
        (None, Some(_)) => {
            Err(problem("IDENTITY_TLS_CERT_FILE", "must be set when IDENTITY_TLS_KEY_FILE is"))
        }
        (None, None) if client_ca_file.is_some() => Err(problem(
            "IDENTITY_TLS_CLIENT_CA_FILE",
            "needs IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE",
        )),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_serve_sqlite_in_the_data_dir() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:50051");
        assert!(!config.is_postgres());
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.bcrypt_cost, 12);
        assert_eq!(config.password_min_length, 15);
        assert_eq!(config.issuer, "identity");
        assert_eq!(config.mail.name(), "files");
    }

    #[test]
    fn mail_goes_over_smtp_when_a_url_is_given_and_its_password_stays_hidden() {
        let smtp = config(&[("IDENTITY_SMTP_URL", "smtps://u:hunter2@mail.example.com")]).unwrap();
        assert_eq!(smtp.mail.name(), "smtp");
        assert!(!format!("{:?}", smtp.describe()).contains("hunter2"));
        assert!(!format!("{smtp:?}").contains("hunter2"));
        assert_eq!(config(&[("IDENTITY_MAIL", "none")]).unwrap().mail.name(), "none");
        assert_eq!(config(&[("IDENTITY_MAIL", "smtp")]).unwrap_err().variable, "IDENTITY_SMTP_URL");
        assert_eq!(config(&[("IDENTITY_SMTP_URL", "http://x")]).unwrap_err().variable, "IDENTITY_SMTP_URL");
        assert_eq!(
            config(&[("IDENTITY_MAIL_FROM", "not an address")]).unwrap_err().variable,
            "IDENTITY_MAIL_FROM"
        );
    }

    #[test]
    fn human_durations_are_understood() {
        let config =
            config(&[("IDENTITY_ACCESS_TOKEN_TTL", "90s"), ("IDENTITY_REFRESH_TOKEN_TTL", "7d")]).unwrap();
        assert_eq!(config.access_token_ttl, Duration::from_secs(90));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        let error = config(&[("IDENTITY_BCRYPT_COST", "3")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_BCRYPT_COST");
        assert!(error.to_string().contains("between 4 and 31"), "{error}");

        let error = config(&[("IDENTITY_ACCESS_TOKEN_TTL", "soon")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_ACCESS_TOKEN_TTL");

        let error = config(&[("IDENTITY_PASSWORD_MIN_LENGTH", "7")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_PASSWORD_MIN_LENGTH");

        let error = config(&[("IDENTITY_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_DATABASE_URL");

        let error = config(&[("IDENTITY_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_LOG_FORMAT");

        let error = config(&[("IDENTITY_SIGNING_ALG", "HS256")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_SIGNING_ALG");
        assert_eq!(config(&[("IDENTITY_SIGNING_ALG", "RS256")]).unwrap().signing_alg.name(), "RS256");

        let error = config(&[("IDENTITY_TLS_CERT_FILE", "cert.pem")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_TLS_KEY_FILE");

        let error = config(&[("IDENTITY_TLS_CLIENT_CA_FILE", "ca.pem")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_TLS_CLIENT_CA_FILE");

        let error = config(&[("IDENTITY_MTLS_CALLERS", "gateway=watch_revocations")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_MTLS_CALLERS");
        assert!(error.problem.contains("IDENTITY_TLS_CLIENT_CA_FILE"), "{error}");

        let error = config(&[("IDENTITY_MAX_STREAMS_PER_CALLER", "0")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_MAX_STREAMS_PER_CALLER");

        let error = config(&[("IDENTITY_TRUSTED_PROXIES", "10.0.0.0/8,lb.internal")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_TRUSTED_PROXIES");
        let proxies =
            config(&[("IDENTITY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7")]).unwrap().trusted_proxies;
        assert_eq!(proxies.to_string(), "10.0.0.0/8,192.0.2.7/32");
    }

    #[test]
    fn the_public_url_is_absolute_and_needs_the_http_listener() {
        let http = ("IDENTITY_HTTP_ADDR", "127.0.0.1:8080");
        let url = |value| config(&[http, ("IDENTITY_PUBLIC_URL", value)]);
        assert_eq!(
            url("https://id.example.com/").unwrap().public_url.as_deref(),
            Some("https://id.example.com")
        );
        assert_eq!(
            url("http://10.0.0.1:8080/auth").unwrap().public_url.as_deref(),
            Some("http://10.0.0.1:8080/auth")
        );
        for bad in [
            "id.example.com",
            "ftp://id.example.com",
            "https://",
            "https:///x",
            "https://a/?q=1",
            "https://a/#f",
        ] {
            assert_eq!(url(bad).unwrap_err().variable, "IDENTITY_PUBLIC_URL", "{bad}");
        }
        let error = config(&[("IDENTITY_PUBLIC_URL", "https://id.example.com")]).unwrap_err();
        assert!(error.problem.contains("IDENTITY_HTTP_ADDR"), "{error}");
    }

    #[test]
    fn described_urls_hide_their_passwords() {
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/identity"), "postgres://u:***@db:5432/identity");
        assert_eq!(
            redact_url("postgres://u@db/identity?password=hunter2&sslmode=require"),
            "postgres://u@db/identity?password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://./data/identity.db"), "sqlite://./data/identity.db");
        let config = config(&[("IDENTITY_DATABASE_URL", "postgres://u:hunter2@db/identity")]).unwrap();
        let described = format!("{:?}", config.describe());
        assert!(!described.contains("hunter2"));
    }

    #[test]
    fn every_declared_variable_is_read_and_named_in_its_errors() {
        let mut seen = std::collections::HashSet::new();
        for variable in VARIABLES {
            assert!(seen.insert(variable.name), "{} is declared twice", variable.name);
            assert!(variable.name.starts_with(ENV_PREFIX), "{}", variable.name);
            // A blank value is refused by whichever parser reads the variable: this fails for a
            // declared name the parsing never looks at.
            let error = config(&[(variable.name, "   ")]).unwrap_err();
            assert_eq!(error.variable, variable.name);
        }
        let config = config(&[]).unwrap();
        assert_eq!(config.describe().len(), VARIABLES.len(), "one line per variable");
    }

    #[test]
    fn the_retired_lockout_variable_is_refused_with_its_replacements() {
        let error = config(&[("IDENTITY_MAX_FAILED_LOGINS", "5")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_MAX_FAILED_LOGINS");
        assert!(error.problem.contains("IDENTITY_LOCKOUT_THRESHOLD"), "{error}");
        let error = config(&[("IDENTITY_LOCKOUT_THRESHOLD", "101")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_LOCKOUT_THRESHOLD");
    }

    #[test]
    fn variable_names_are_matched_without_regard_to_case_after_the_prefix() {
        let config = config(&[("IDENTITY_bcrypt_Cost", "10")]).unwrap();
        assert_eq!(config.bcrypt_cost, 10);
    }

    #[test]
    fn the_database_url_is_redacted_in_debug_output() {
        let config = config(&[("IDENTITY_DATABASE_URL", "postgres://u:hunter2@db/identity")]).unwrap();
        assert!(config.is_postgres());
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
