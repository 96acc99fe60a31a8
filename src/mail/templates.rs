//! The text of each message: a subject, a plain-text part and an HTML part per kind, written as
//! minijinja templates. Built-in versions ship in the binary; a file of the same name in
//! `IDENTITY_MAIL_TEMPLATES` replaces one (`password_reset.subject.txt`, `password_reset.txt`,
//! `password_reset.html`, and likewise `verify_email.*`, `email_changed.*`, `account_exists.*`). Every template is
//! compiled and tried at start, so a broken override stops the service there, not at the
//! first message. Templates see `name`, `link`, `expires_at` and `expires_in`; HTML output is
//! escaped.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior, context};

use crate::domain::{MailContent, MailKind};

/// The three parts of a message, by file suffix.
const PARTS: [&str; 3] = ["subject.txt", "txt", "html"];

fn builtin(kind: MailKind, part: &str) -> &'static str {
    macro_rules! templates {
        ($($kind:ident => $file:literal),*) => {
            match (kind, part) {
                $(
                    (MailKind::$kind, "subject.txt") => include_str!(concat!("templates/", $file, ".subject.txt")),
                    (MailKind::$kind, "txt") => include_str!(concat!("templates/", $file, ".txt")),
                    (MailKind::$kind, _) => include_str!(concat!("templates/", $file, ".html")),
                )*
            }
        };
    }
    templates!(PasswordReset => "password_reset", VerifyEmail => "verify_email",
        EmailChanged => "email_changed", AccountExists => "account_exists", Test => "test")
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read mail template {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("mail template {name}: {source}")]
    Invalid { name: String, source: minijinja::Error },
}

/// A message's text, ready to be put in an envelope.
#[derive(Debug)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// The built-in templates, each replaced by its file in `dir` when there is one.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // A misspelt variable in an override fails at start rather than rendering as nothing.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for kind in MailKind::ALL {
            for part in PARTS {
                let name = format!("{kind}.{part}");
                let source = match dir.map(|dir| dir.join(&name)).filter(|path| path.exists()) {
                    Some(path) => std::fs::read_to_string(&path)
                        .map_err(|source| TemplateError::Read { path: path.clone(), source })?,
                    None => builtin(kind, part).to_owned(),
                };
                env.add_template_owned(name.clone(), source)
                    .map_err(|source| TemplateError::Invalid { name, source })?;
            }
        }
        let templates = Self { env };
        let sample = MailContent {
            name: "Sample".into(),
            link: Some("https://example.com/?token=sample".to_owned().into()),
            expires_at: Some(Utc::now()),
        };
        for kind in MailKind::ALL {
            templates.render(kind, &sample, Utc::now())?;
        }
        Ok(templates)
    }

    pub fn render(
        &self,
        kind: MailKind,
        content: &MailContent,
        now: DateTime<Utc>,
    ) -> Result<Rendered, TemplateError> {
        let ctx = context! {
            name => content.name.clone(),
            link => content.link().unwrap_or_default(),
            expires_at => content.expires_at.map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default(),
            expires_in => content.expires_at.map(|at| expires_in(at, now)).unwrap_or_default(),
        };
        let render = |part: &str| {
            let name = format!("{kind}.{part}");
            self.env
                .get_template(&name)
                .and_then(|template| template.render(&ctx))
                .map_err(|source| TemplateError::Invalid { name, source })
        };
        // A subject is one header line: no line breaks, whatever the template says.
        let subject = render("subject.txt")?.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Rendered { subject, text: render("txt")?, html: render("html")? })
    }
}

/// "in 30 minutes", "in 2 hours".
fn expires_in(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (at - now).num_minutes().max(1);
    match minutes {
        1 => "in 1 minute".into(),
        m if m < 120 => format!("in {m} minutes"),
        m => format!("in {} hours", m / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(name: &str) -> MailContent {
        MailContent {
            name: name.into(),
            link: Some("https://app.example.com/reset?token=abc".to_owned().into()),
            expires_at: Some(Utc::now() + chrono::TimeDelta::minutes(30)),
        }
    }

    #[test]
    fn built_in_templates_carry_the_name_the_link_and_the_expiry() {
        let templates = Templates::load(None).unwrap();
        let rendered = templates.render(MailKind::PasswordReset, &content("Ada <b>"), Utc::now()).unwrap();
        assert_eq!(rendered.subject, "Reset your password");
        assert!(rendered.text.contains("Hello Ada <b>,"));
        assert!(rendered.text.contains("https://app.example.com/reset?token=abc"));
        assert!(rendered.text.contains("in 30 minutes") || rendered.text.contains("in 29 minutes"));
        assert!(rendered.html.contains("Ada &lt;b&gt;"), "HTML is escaped: {}", rendered.html);
        // minijinja escapes `/` too; an entity in an attribute reads the same to every client.
        let html = rendered.html.replace("&#x2f;", "/");
        assert!(html.contains("href=\"https://app.example.com/reset?token=abc\""), "{html}");
    }

    #[test]
    fn a_file_in_the_directory_replaces_its_built_in_template_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password_reset.subject.txt"), "Reset for {{ name }}\nnow").unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let rendered = templates.render(MailKind::PasswordReset, &content("Ada"), Utc::now()).unwrap();
        assert_eq!(rendered.subject, "Reset for Ada now");

        std::fs::write(dir.path().join("verify_email.txt"), "{{ nmae }}").unwrap();
        let error = Templates::load(Some(dir.path())).unwrap_err();
        assert!(error.to_string().contains("verify_email.txt"), "{error}");
    }
}
