//! The machinery the variable list in `config` is written with: the environment as given
//! ([`Env`]), the three ways a field is read from it (a text value with a default, an optional
//! value, or custom code), and the small parsers and formatters the list uses. Every error it
//! makes names its variable.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use super::{ConfigError, ENV_PREFIX};

/// The `IDENTITY_*` variables as given. The part after the prefix is matched without regard to
/// case (`IDENTITY_log_format` is `IDENTITY_LOG_FORMAT`), as it was when envy read them.
pub(super) struct Env(HashMap<String, String>);

impl Env {
    pub(super) fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            vars.into_iter()
                .filter_map(|(name, value)| {
                    let rest = name.strip_prefix(ENV_PREFIX)?;
                    Some((format!("{ENV_PREFIX}{}", rest.to_ascii_uppercase()), value))
                })
                .collect(),
        )
    }

    /// The trimmed value of `name`. An unset variable and one set to the empty string both mean
    /// "use the default"; a value of only spaces is a mistake worth reporting.
    pub(super) fn get(&self, name: &str) -> Result<Option<&str>, ConfigError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) if v.trim().is_empty() => Err(problem(name, "is blank")),
            Some(v) => Ok(Some(v.trim())),
        }
    }

    /// `name`'s value, or `default` when unset, through `parser`.
    pub(super) fn parse<T>(
        &self,
        name: &str,
        default: &str,
        parser: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let text = self.get(name)?.unwrap_or(default);
        parser(text).map_err(|why| problem(name, format!("{why} (got {text:?})")))
    }
}

/// How a field is read from the environment, given its first variable's `(name, default)`.
pub(super) trait Parse<T> {
    fn parse(&self, env: &Env, variable: (&'static str, &'static str)) -> Result<T, ConfigError>;
}

/// The value, or the documented default when unset, through a text parser.
pub(super) struct Text<F>(F);
pub(super) fn text<T, F: Fn(&str) -> Result<T, String>>(parser: F) -> Text<F> {
    Text(parser)
}
impl<T, F: Fn(&str) -> Result<T, String>> Parse<T> for Text<F> {
    fn parse(&self, env: &Env, (name, default): (&'static str, &'static str)) -> Result<T, ConfigError> {
        env.parse(name, default, &self.0)
    }
}

/// `None` when unset, else the value through a text parser.
pub(super) struct Optional<F>(F);
pub(super) fn optional<T, F: Fn(&str) -> Result<T, String>>(parser: F) -> Optional<F> {
    Optional(parser)
}
impl<T, F: Fn(&str) -> Result<T, String>> Parse<Option<T>> for Optional<F> {
    fn parse(&self, env: &Env, (name, _): (&'static str, &'static str)) -> Result<Option<T>, ConfigError> {
        env.get(name)?
            .map(|text| (self.0)(text).map_err(|why| problem(name, format!("{why} (got {text:?})"))))
            .transpose()
    }
}

/// Anything else: a default computed at start, or a field read from several variables.
pub(super) struct Custom<F>(F);
pub(super) fn custom<T, F: Fn(&Env) -> Result<T, ConfigError>>(parser: F) -> Custom<F> {
    Custom(parser)
}
impl<T, F: Fn(&Env) -> Result<T, ConfigError>> Parse<T> for Custom<F> {
    fn parse(&self, env: &Env, _: (&'static str, &'static str)) -> Result<T, ConfigError> {
        (self.0)(env)
    }
}

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|e| e.to_string())
}

pub(super) fn path_list(text: &str) -> Vec<PathBuf> {
    text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

pub(super) fn show_duration(value: Duration) -> String {
    humantime::format_duration(value).to_string()
}

pub(super) fn show_path(path: Option<&PathBuf>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

pub(super) fn show_addr(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

/// `scheme://user:***@host/...`: the password of a URL, and any `password=` parameter, hidden.
pub(super) fn redact_url(url: &str) -> String {
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

pub(super) fn problem(name: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable: name.to_owned(), problem: problem.into() }
}

pub(super) fn in_range<T>(text: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let value: T = text.parse().map_err(|_| "is not a whole number".to_string())?;
    if value < min || value > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(value)
}

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("is not a duration like 90s, 15m or 30d: {e}"))
}

pub(super) fn bounded_duration(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
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
