//! A role a user holds (`billing.read`, `identity.admin`): what the `roles` claim of an access
//! token lists, what `SetRoles` and `identity user grant-role` take. Lower-case ASCII letters,
//! digits, `.`, `_`, `:` and `-`, 1 to 64 characters, so that a role is safe in a token, a log
//! line, a shell and a comma-separated list.

use std::fmt;

use super::FieldViolation;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(String);

impl Role {
    pub const MAX_LEN: usize = 64;
    /// Roles one user may hold: they all travel in every access token.
    pub const MAX_PER_USER: usize = 64;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-'));
        if !valid {
            return Err(FieldViolation::new(
                field,
                format!(
                    "a role must be 1 to {} characters of a-z, 0-9, '.', '_', ':' and '-'",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A set of roles from a request: each parsed, duplicates dropped, sorted; at most
    /// [`Role::MAX_PER_USER`].
    pub fn parse_set(field: &'static str, raw: &[String]) -> Result<Vec<Self>, FieldViolation> {
        if raw.len() > Self::MAX_PER_USER * 4 {
            return Err(FieldViolation::new(field, format!("at most {} roles", Self::MAX_PER_USER)));
        }
        let mut roles = raw.iter().map(|role| Self::parse(field, role)).collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        if roles.len() > Self::MAX_PER_USER {
            return Err(FieldViolation::new(field, format!("at most {} roles", Self::MAX_PER_USER)));
        }
        Ok(roles)
    }

    /// Roles as the database returns them: a comma-separated aggregate (NULL: none), in no
    /// particular order. Only parsed roles are written, so nothing is checked again.
    pub(crate) fn from_stored_list(list: Option<&str>) -> Vec<Self> {
        let mut roles: Vec<Self> = list
            .unwrap_or_default()
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| Self(r.to_owned()))
            .collect();
        roles.sort();
        roles
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_plain_lower_case_names() {
        for good in ["billing.read", "identity.admin", "a", "ns:team_1-x", &"r".repeat(64)] {
            assert_eq!(Role::parse("role", good).unwrap().as_str(), good);
        }
        for bad in ["", "Admin", "a b", "a,b", "é", "x;rm", &"r".repeat(65), "a\0"] {
            assert!(Role::parse("role", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_set_is_sorted_without_duplicates_and_bounded() {
        let raw = ["b", "a", "b"].map(String::from);
        let set = Role::parse_set("roles", &raw).unwrap();
        assert_eq!(set.iter().map(Role::as_str).collect::<Vec<_>>(), ["a", "b"]);
        let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
        assert!(Role::parse_set("roles", &many).is_err());
        assert!(Role::parse_set("roles", &[]).unwrap().is_empty());
        assert_eq!(Role::from_stored_list(Some("b,a")), set);
        assert!(Role::from_stored_list(None).is_empty());
    }
}
