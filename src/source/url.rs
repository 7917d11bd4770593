//! Parsing git URLs into what we hand libgit2 (never any credential) and what we print (never
//! any credential either, but more telling: it shows that credentials were given).

use std::path::{Component, Path, PathBuf};

use crate::secret::Secret;

/// Returns `url` safe to print: a password is removed (`https://user:tok@h/x` →
/// `https://user@h/x`), and a lone user over http(s), which is usually a token
/// (`https://ghp_xyz@github.com/...`), is replaced by `***`. ssh users (`git@`) and local paths
/// are kept as they are, since they are not secret and help to tell sources apart.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = split_scheme(url) else {
        return url.to_string();
    };
    let (authority, path) = split_authority(rest);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => user,
        None if is_http(scheme) => "***",
        None => userinfo,
    };
    if user.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{user}@{host}{path}")
    }
}

/// What kind of transport a URL uses; decides which credentials we can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Local,
    Http,
    Ssh,
}

/// A parsed source URL.
pub(crate) struct ParsedUrl {
    /// Given to libgit2 and stored in the cache repo's config: holds no password and, for
    /// http(s), no user at all (the user travels through the credentials callback).
    pub remote_url: String,
    /// For messages and logs.
    pub display: String,
    pub transport: Transport,
    /// The user named in the URL (http(s): `user` of `user:pass@`, or a lone `user@`; ssh: `git`).
    pub user: Option<String>,
    /// A password given inline in an http(s) URL; used only when the token env var is unset.
    pub password: Option<Secret>,
}

impl ParsedUrl {
    pub fn parse(url: &str) -> std::io::Result<ParsedUrl> {
        let display = redacted_url(url);
        if let Some((scheme, rest)) = split_scheme(url) {
            let transport = match scheme.to_ascii_lowercase().as_str() {
                "file" => Transport::Local,
                "http" | "https" => Transport::Http,
                _ => Transport::Ssh,
            };
            let (authority, path) = split_authority(rest);
            let (user, password, host) = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((u, p)) => (Some(u.to_string()), Some(Secret::new(p)), host),
                    None => (Some(userinfo.to_string()), None, host),
                },
                None => (None, None, authority),
            };
            let remote_url = match (transport, &user) {
                (Transport::Ssh, Some(u)) => format!("{scheme}://{u}@{host}{path}"),
                _ => format!("{scheme}://{host}{path}"),
            };
            return Ok(ParsedUrl {
                remote_url,
                display,
                transport,
                user: user.filter(|u| !u.is_empty()),
                password,
            });
        }
        if let Some(user_host) = scp_like_prefix(url) {
            let user = user_host.rsplit_once('@').map(|(u, _)| u.to_string());
            return Ok(ParsedUrl {
                remote_url: url.to_string(),
                display,
                transport: Transport::Ssh,
                user,
                password: None,
            });
        }
        // A plain path: make it absolute so the cache key and the remote do not depend on the
        // cwd of a later run.
        let abs = absolute(Path::new(url))?;
        let s = abs.to_string_lossy().into_owned();
        Ok(ParsedUrl {
            remote_url: s.clone(),
            display: s,
            transport: Transport::Local,
            user: None,
            password: None,
        })
    }
}

/// The absolute form of `path`: canonical if it exists (so `../x` and `./x` from different
/// cwds share one cache), else with `.` and `..` folded lexically so errors show a clean path.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(canonical) = path.canonicalize() {
        return Ok(canonical);
    }
    let mut out = PathBuf::new();
    for comp in std::path::absolute(path)?.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// `scheme://rest` → (`scheme`, `rest`), if the URL has a scheme.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// `authority/path` → (`authority`, `/path`).
fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// git's rule for scp-like syntax: a colon before any slash (`git@host:org/repo.git`). Returns
/// the part before the colon.
fn scp_like_prefix(url: &str) -> Option<&str> {
    let colon = url.find(':')?;
    let before = &url[..colon];
    let slash_first = url.find('/').is_some_and(|s| s < colon);
    // A one-letter prefix is a Windows drive (`C:\...`), not a host.
    (!slash_first && before.len() > 1).then_some(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_https_user_and_token() {
        assert_eq!(
            redacted_url("https://user:tok3n@github.com/org/repo.git"),
            "https://user@github.com/org/repo.git"
        );
    }

    #[test]
    fn redacts_https_token_only() {
        assert_eq!(
            redacted_url("https://ghp_tok3n@github.com/org/repo.git"),
            "https://***@github.com/org/repo.git"
        );
        assert_eq!(
            redacted_url("https://:tok3n@example.com"),
            "https://example.com"
        );
    }

    #[test]
    fn keeps_ssh_users_and_strips_ssh_passwords() {
        assert_eq!(
            redacted_url("ssh://git@github.com:22/org/repo.git"),
            "ssh://git@github.com:22/org/repo.git"
        );
        assert_eq!(
            redacted_url("ssh://git:pw@host/repo"),
            "ssh://git@host/repo"
        );
        assert_eq!(
            redacted_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
    }

    #[test]
    fn leaves_file_urls_and_paths_alone() {
        assert_eq!(redacted_url("file:///srv/repo.git"), "file:///srv/repo.git");
        assert_eq!(redacted_url("/srv/repo"), "/srv/repo");
        assert_eq!(
            redacted_url("https://github.com/org/repo.git"),
            "https://github.com/org/repo.git"
        );
    }

    #[test]
    fn remote_url_for_https_has_no_userinfo() {
        let p = ParsedUrl::parse("https://bob:tok3n@example.com/x.git").unwrap();
        assert_eq!(p.remote_url, "https://example.com/x.git");
        assert_eq!(p.transport, Transport::Http);
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("tok3n"));
        assert!(!p.display.contains("tok3n"));
    }

    #[test]
    fn classifies_transports() {
        let p = ParsedUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(p.transport, Transport::Ssh);
        assert_eq!(p.user.as_deref(), Some("git"));
        assert_eq!(p.remote_url, "git@github.com:org/repo.git");

        let p = ParsedUrl::parse("ssh://git@host/repo").unwrap();
        assert_eq!(
            (p.transport, p.user.as_deref()),
            (Transport::Ssh, Some("git"))
        );

        let p = ParsedUrl::parse("file:///srv/repo").unwrap();
        assert_eq!(p.transport, Transport::Local);

        let p = ParsedUrl::parse("some/relative/repo").unwrap();
        assert_eq!(p.transport, Transport::Local);
        assert!(Path::new(&p.remote_url).is_absolute(), "{}", p.remote_url);
    }
}
