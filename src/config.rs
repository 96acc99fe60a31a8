//! Configuration from `IDENTITY_*` environment variables, parsed once at start into a validated
//! [`Config`]. Every variable is read as text and parsed here, so that an error names the variable.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

pub const ENV_PREFIX: &str = "IDENTITY_";

/// What the process runs with. Secrets (the database URL may hold a password) are `SecretString`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub database_acquire_timeout: Duration,
    pub data_dir: PathBuf,
    pub signing_key_file: Option<PathBuf>,
    pub verify_key_files: Vec<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub bcrypt_cost: u32,
    pub password_min_length: usize,
    pub hash_threads: usize,
    /// `None`: sized from the measured cost of one hash (see `passwords::TARGET_MAX_WAIT`).
    pub hash_queue: Option<usize>,
    pub token_cache_size: usize,
    pub session_purge_interval: Duration,
    pub max_failed_logins: u32,
    pub lockout_duration: Duration,
    pub tls: Option<TlsFiles>,
    pub health_listen_addr: Option<SocketAddr>,
    pub health_check_interval: Duration,
    pub revocation_heartbeat: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// PEM files for serving TLS; with `client_ca_file`, only clients presenting a certificate
/// issued by that CA get in (mutual TLS).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
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

/// The environment exactly as given: every field is text, so that envy itself cannot fail on a
/// value and each value is parsed below with an error that names its variable.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    listen_addr: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<String>,
    database_acquire_timeout: Option<String>,
    data_dir: Option<String>,
    signing_key_file: Option<String>,
    verify_key_files: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    access_token_ttl: Option<String>,
    refresh_token_ttl: Option<String>,
    bcrypt_cost: Option<String>,
    password_min_length: Option<String>,
    hash_threads: Option<String>,
    hash_queue: Option<String>,
    token_cache_size: Option<String>,
    session_purge_interval: Option<String>,
    max_failed_logins: Option<String>,
    lockout_duration: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    tls_client_ca_file: Option<String>,
    health_listen_addr: Option<String>,
    health_check_interval: Option<String>,
    revocation_heartbeat: Option<String>,
    metrics_addr: Option<String>,
    log_format: Option<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given `(name, value)` pairs as if they were the environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> =
            vars.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)).collect();
        let raw: RawConfig = envy::prefixed(ENV_PREFIX).from_iter(vars).map_err(|error| ConfigError {
            variable: format!("{ENV_PREFIX}*"),
            problem: error.to_string(),
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(non_empty("DATA_DIR", raw.data_dir)?.unwrap_or_else(|| "./data".into()));
        let database_url = match non_empty("DATABASE_URL", raw.database_url)? {
            Some(url)
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:") =>
            {
                url
            }
            Some(_) => {
                return Err(problem(
                    "DATABASE_URL",
                    "must start with postgres://, postgresql:// or sqlite://",
                ));
            }
            None => format!("sqlite://{}", data_dir.join("identity.db").display()),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            listen_addr: parse("LISTEN_ADDR", raw.listen_addr, "127.0.0.1:50051", |s| {
                s.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            database_url: SecretString::from(database_url),
            database_max_connections: parse(
                "DATABASE_MAX_CONNECTIONS",
                raw.database_max_connections,
                "10",
                |s| in_range(s, 1, 1000),
            )?,
            database_acquire_timeout: parse(
                "DATABASE_ACQUIRE_TIMEOUT",
                raw.database_acquire_timeout,
                "5s",
                duration,
            )?,
            signing_key_file: non_empty("SIGNING_KEY_FILE", raw.signing_key_file)?.map(PathBuf::from),
            verify_key_files: non_empty("VERIFY_KEY_FILES", raw.verify_key_files)?
                .map(|list| {
                    list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
                })
                .unwrap_or_default(),
            data_dir,
            issuer: non_empty("ISSUER", raw.issuer)?.unwrap_or_else(|| "identity".into()),
            audience: non_empty("AUDIENCE", raw.audience)?.unwrap_or_else(|| "identity".into()),
            access_token_ttl: parse("ACCESS_TOKEN_TTL", raw.access_token_ttl, "15m", |s| {
                bounded_duration(s, Duration::from_secs(1), Duration::from_secs(24 * 3600))
            })?,
            refresh_token_ttl: parse("REFRESH_TOKEN_TTL", raw.refresh_token_ttl, "30d", |s| {
                bounded_duration(s, Duration::from_secs(1), Duration::from_secs(365 * 24 * 3600))
            })?,
            bcrypt_cost: parse("BCRYPT_COST", raw.bcrypt_cost, "12", |s| in_range(s, 4, 31))?,
            password_min_length: parse("PASSWORD_MIN_LENGTH", raw.password_min_length, "15", |s| {
                // 64 leaves room under bcrypt's 71-byte ceiling even for one-byte characters.
                in_range(s, 8, 64)
            })?,
            hash_threads: parse("HASH_THREADS", raw.hash_threads, &cores.to_string(), |s| {
                in_range(s, 1, 256)
            })?,
            hash_queue: non_empty("HASH_QUEUE", raw.hash_queue)?
                .map(|text| {
                    in_range(&text, 0, 100_000)
                        .map_err(|why| problem("HASH_QUEUE", format!("{why} (got {text:?})")))
                })
                .transpose()?,
            token_cache_size: parse("TOKEN_CACHE_SIZE", raw.token_cache_size, "10000", |s| {
                in_range(s, 0, 10_000_000)
            })?,
            session_purge_interval: parse("SESSION_PURGE_INTERVAL", raw.session_purge_interval, "1h", |s| {
                bounded_duration(s, Duration::from_millis(100), Duration::from_secs(7 * 24 * 3600))
            })?,
            max_failed_logins: parse("MAX_FAILED_LOGINS", raw.max_failed_logins, "5", |s| {
                in_range(s, 0, 1000)
            })?,
            lockout_duration: parse("LOCKOUT_DURATION", raw.lockout_duration, "15m", |s| {
                bounded_duration(s, Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600))
            })?,
            tls: tls_files(raw.tls_cert_file, raw.tls_key_file, raw.tls_client_ca_file)?,
            health_listen_addr: optional_addr("HEALTH_LISTEN_ADDR", raw.health_listen_addr)?,
            metrics_addr: optional_addr("METRICS_ADDR", raw.metrics_addr)?,
            // Well under the idle timeouts of common proxies and load balancers (60 s and up).
            revocation_heartbeat: parse("REVOCATION_HEARTBEAT", raw.revocation_heartbeat, "10s", |s| {
                bounded_duration(s, Duration::from_millis(100), Duration::from_secs(300))
            })?,
            health_check_interval: parse("HEALTH_CHECK_INTERVAL", raw.health_check_interval, "5s", |s| {
                bounded_duration(s, Duration::from_millis(100), Duration::from_secs(3600))
            })?,
            log_format: parse("LOG_FORMAT", raw.log_format, "text", |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("must be `text` or `json`".into()),
            })?,
        })
    }

    /// Every setting by its variable name with its effective value, for `identity
    /// check-config`. The database URL's password is redacted; key files are named, never read.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        use secrecy::ExposeSecret;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let tls = self.tls.as_ref();
        vec![
            ("IDENTITY_LISTEN_ADDR", self.listen_addr.to_string()),
            ("IDENTITY_DATABASE_URL", redact_url(self.database_url.expose_secret())),
            ("IDENTITY_DATABASE_MAX_CONNECTIONS", self.database_max_connections.to_string()),
            ("IDENTITY_DATABASE_ACQUIRE_TIMEOUT", duration(self.database_acquire_timeout)),
            ("IDENTITY_DATA_DIR", self.data_dir.display().to_string()),
            ("IDENTITY_SIGNING_KEY_FILE", path(&self.signing_key_file)),
            (
                "IDENTITY_VERIFY_KEY_FILES",
                self.verify_key_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            ),
            ("IDENTITY_ISSUER", self.issuer.clone()),
            ("IDENTITY_AUDIENCE", self.audience.clone()),
            ("IDENTITY_ACCESS_TOKEN_TTL", duration(self.access_token_ttl)),
            ("IDENTITY_REFRESH_TOKEN_TTL", duration(self.refresh_token_ttl)),
            ("IDENTITY_BCRYPT_COST", self.bcrypt_cost.to_string()),
            ("IDENTITY_PASSWORD_MIN_LENGTH", self.password_min_length.to_string()),
            ("IDENTITY_HASH_THREADS", self.hash_threads.to_string()),
            ("IDENTITY_HASH_QUEUE", self.hash_queue.map_or("auto (1.5 s of work)".into(), |q| q.to_string())),
            ("IDENTITY_TOKEN_CACHE_SIZE", self.token_cache_size.to_string()),
            ("IDENTITY_SESSION_PURGE_INTERVAL", duration(self.session_purge_interval)),
            ("IDENTITY_MAX_FAILED_LOGINS", self.max_failed_logins.to_string()),
            ("IDENTITY_LOCKOUT_DURATION", duration(self.lockout_duration)),
            ("IDENTITY_TLS_CERT_FILE", path(&tls.map(|t| t.cert_file.clone()))),
            ("IDENTITY_TLS_KEY_FILE", path(&tls.map(|t| t.key_file.clone()))),
            ("IDENTITY_TLS_CLIENT_CA_FILE", path(&tls.and_then(|t| t.client_ca_file.clone()))),
            ("IDENTITY_HEALTH_LISTEN_ADDR", addr(self.health_listen_addr)),
            ("IDENTITY_HEALTH_CHECK_INTERVAL", duration(self.health_check_interval)),
            ("IDENTITY_METRICS_ADDR", addr(self.metrics_addr)),
            ("IDENTITY_REVOCATION_HEARTBEAT", duration(self.revocation_heartbeat)),
            ("IDENTITY_LOG_FORMAT", format!("{:?}", self.log_format).to_lowercase()),
        ]
    }

    pub fn is_postgres(&self) -> bool {
        use secrecy::ExposeSecret;
        self.database_url.expose_secret().starts_with("postgres")
    }
}

/// `scheme://user:***@host/...`: the password of a URL, and any `password=` parameter, hidden.
fn redact_url(url: &str) -> String {
    let mut redacted = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            redacted.replace_range(start..scheme_end + 3 + at, "***");
        }
    }
    if let Some(query_start) = redacted.find('?') {
        let (base, query) = redacted.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted = format!("{base}{}", query.join("&"));
    }
    redacted
}

fn optional_addr(name: &str, value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    non_empty(name, value)?
        .map(|text| text.parse::<SocketAddr>().map_err(|e| problem(name, format!("{e} (got {text:?})"))))
        .transpose()
}

fn tls_files(
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let cert = non_empty("TLS_CERT_FILE", cert)?.map(PathBuf::from);
    let key = non_empty("TLS_KEY_FILE", key)?.map(PathBuf::from);
    let client_ca_file = non_empty("TLS_CLIENT_CA_FILE", client_ca)?.map(PathBuf::from);
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles { cert_file, key_file, client_ca_file })),
        (Some(_), None) => Err(problem("TLS_KEY_FILE", "must be set when IDENTITY_TLS_CERT_FILE is")),
        (None, Some(_)) => Err(problem("TLS_CERT_FILE", "must be set when IDENTITY_TLS_KEY_FILE is")),
        (None, None) if client_ca_file.is_some() => {
            Err(problem("TLS_CLIENT_CA_FILE", "needs IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE"))
        }
        (None, None) => Ok(None),
    }
}

fn problem(name: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable: format!("{ENV_PREFIX}{name}"), problem: problem.into() }
}

/// An unset variable and one set to the empty string both mean "use the default"; a value of only
/// spaces is a mistake worth reporting.
fn non_empty(name: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.trim().is_empty() => Err(problem(name, "is blank")),
        Some(v) => Ok(Some(v.trim().to_owned())),
    }
}

fn parse<T>(
    name: &str,
    value: Option<String>,
    default: &str,
    parser: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = non_empty(name, value)?;
    let text = value.as_deref().unwrap_or(default);
    parser(text).map_err(|why| problem(name, format!("{why} (got {text:?})")))
}

fn in_range<T>(text: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let value: T = text.parse().map_err(|_| "is not a whole number".to_string())?;
    if value < min || value > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(value)
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("is not a duration like 90s, 15m or 30d: {e}"))
}

fn bounded_duration(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = duration(text)?;
    if value < min || value > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(value)
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

        let error = config(&[("IDENTITY_TLS_CERT_FILE", "cert.pem")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_TLS_KEY_FILE");

        let error = config(&[("IDENTITY_TLS_CLIENT_CA_FILE", "ca.pem")]).unwrap_err();
        assert_eq!(error.variable, "IDENTITY_TLS_CLIENT_CA_FILE");
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
        assert_eq!(config.describe().len(), 27, "one line per IDENTITY_* variable");
    }

    #[test]
    fn the_database_url_is_redacted_in_debug_output() {
        let config = config(&[("IDENTITY_DATABASE_URL", "postgres://u:hunter2@db/identity")]).unwrap();
        assert!(config.is_postgres());
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
