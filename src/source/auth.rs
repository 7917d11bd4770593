//! Which credential to answer libgit2's credentials callback with. Kept pure (no git2 `Cred`,
//! no env) so the selection can be unit-tested without a server.

use std::path::PathBuf;

use git2::CredentialType;

use crate::secret::Secret;

/// The user GitHub/GitLab/Gitea accept with a token as the password.
pub(crate) const TOKEN_USER: &str = "x-access-token";

/// What we know that can authenticate a fetch.
pub(crate) struct AuthInputs {
    /// Name of the env var the token came from (for the hint when it is missing).
    pub token_env: String,
    /// The token from that env var, read at fetch time.
    pub token: Option<Secret>,
    /// The user named in the URL, if any.
    pub url_user: Option<String>,
    /// A password given inline in the URL; the env token wins over it.
    pub url_password: Option<Secret>,
    pub ssh_key: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    UserPass { user: String, password: Secret },
    SshKey { user: String, key: PathBuf },
    Username(String),
}

/// Picks the credential for one callback invocation. `attempt` counts earlier requests for the
/// same kind of credential in this fetch: libgit2 calls again after a rejected credential, and
/// offering the same one again would loop forever, so a second request is an auth failure.
/// The `Err` is the fix to tell the user.
pub(crate) fn choose(
    inputs: &AuthInputs,
    allowed: CredentialType,
    username_from_url: Option<&str>,
    attempt: u32,
) -> Result<Choice, String> {
    let user_from = |default: &str| {
        username_from_url
            .or(inputs.url_user.as_deref())
            .unwrap_or(default)
            .to_string()
    };
    if allowed.contains(CredentialType::USERNAME) {
        // ssh asks for the user first, then for the key: not a retry.
        return Ok(Choice::Username(user_from("git")));
    }
    if allowed.contains(CredentialType::SSH_KEY) {
        return match &inputs.ssh_key {
            Some(_) if attempt > 0 => Err(
                "the ssh key was rejected; check --ssh-key and that its public key has read access to the repository"
                    .to_string(),
            ),
            Some(key) => Ok(Choice::SshKey {
                user: user_from("git"),
                key: key.clone(),
            }),
            None => Err("the server wants an ssh key; pass one with --ssh-key".to_string()),
        };
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        let hint = format!(
            "set {} to a token with read access to the repository",
            inputs.token_env
        );
        if attempt > 0 {
            return Err(format!("the credentials were rejected; {hint}"));
        }
        let password = inputs.token.clone().or_else(|| inputs.url_password.clone());
        return match (password, &inputs.url_user) {
            (Some(password), Some(user)) => Ok(Choice::UserPass {
                user: user.clone(),
                password,
            }),
            (Some(password), None) => Ok(Choice::UserPass {
                user: TOKEN_USER.to_string(),
                password,
            }),
            // A lone user in an https URL is often a token used as the user name, which
            // GitHub accepts with an empty password (as `git` itself sends it).
            (None, Some(user)) => Ok(Choice::UserPass {
                user: user.clone(),
                password: Secret::new(""),
            }),
            (None, None) => Err(format!("the server wants credentials; {hint}")),
        };
    }
    Err(format!(
        "the server asked for an unsupported kind of credential ({allowed:?})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> AuthInputs {
        AuthInputs {
            token_env: "RECONCILER_GIT_TOKEN".into(),
            token: None,
            url_user: None,
            url_password: None,
            ssh_key: None,
        }
    }

    #[test]
    fn https_token_goes_with_the_access_token_user() {
        let i = AuthInputs {
            token: Some(Secret::new("t")),
            ..inputs()
        };
        let c = choose(&i, CredentialType::USER_PASS_PLAINTEXT, None, 0).unwrap();
        assert_eq!(
            c,
            Choice::UserPass {
                user: TOKEN_USER.into(),
                password: Secret::new("t")
            }
        );
    }

    #[test]
    fn https_token_goes_with_the_url_user_and_beats_the_url_password() {
        let i = AuthInputs {
            token: Some(Secret::new("env")),
            url_user: Some("bob".into()),
            url_password: Some(Secret::new("inline")),
            ..inputs()
        };
        let c = choose(&i, CredentialType::USER_PASS_PLAINTEXT, None, 0).unwrap();
        assert_eq!(
            c,
            Choice::UserPass {
                user: "bob".into(),
                password: Secret::new("env")
            }
        );
    }

    #[test]
    fn https_without_token_says_which_env_var_to_set() {
        let err = choose(&inputs(), CredentialType::USER_PASS_PLAINTEXT, None, 0).unwrap_err();
        assert!(err.contains("set RECONCILER_GIT_TOKEN"), "{err}");
    }

    #[test]
    fn a_rejected_token_is_not_offered_again() {
        let i = AuthInputs {
            token: Some(Secret::new("t")),
            ..inputs()
        };
        let err = choose(&i, CredentialType::USER_PASS_PLAINTEXT, None, 1).unwrap_err();
        assert!(err.contains("rejected"), "{err}");
    }

    #[test]
    fn ssh_uses_the_key_file_and_the_url_user() {
        let i = AuthInputs {
            ssh_key: Some("/k/id".into()),
            ..inputs()
        };
        let c = choose(&i, CredentialType::USERNAME, Some("deploy"), 0).unwrap();
        assert_eq!(c, Choice::Username("deploy".into()));
        let c = choose(&i, CredentialType::SSH_KEY, Some("deploy"), 0).unwrap();
        assert_eq!(
            c,
            Choice::SshKey {
                user: "deploy".into(),
                key: "/k/id".into()
            }
        );
        let err = choose(&i, CredentialType::SSH_KEY, Some("deploy"), 1).unwrap_err();
        assert!(err.contains("check --ssh-key"), "{err}");
    }

    #[test]
    fn ssh_without_key_asks_for_one() {
        let err = choose(&inputs(), CredentialType::SSH_KEY, None, 0).unwrap_err();
        assert!(err.contains("--ssh-key"), "{err}");
    }
}
