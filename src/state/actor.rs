//! Who started a deploy, for history and the audit log: `--actor`, else `RECONCILER_ACTOR`,
//! else the CI's own identity variable, else `$USER@hostname`. The daemon is `daemon`.

/// CI identity variables, in order, with the prefix that names the CI.
const CI_VARS: &[(&str, &str)] = &[
    ("GITHUB_ACTOR", "github:"),
    ("GITLAB_USER_LOGIN", "gitlab:"),
    ("BUILDKITE_BUILD_CREATOR", "buildkite:"),
    ("CIRCLE_USERNAME", "circleci:"),
    ("BITBUCKET_STEP_TRIGGERER_UUID", "bitbucket:"),
];

/// Resolves the actor from `flag` and the environment read through `var`.
pub fn resolve(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> String {
    let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    if let Some(a) = flag.filter(|a| !a.trim().is_empty()) {
        return a.to_string();
    }
    if let Some(a) = non_empty(var("RECONCILER_ACTOR")) {
        return a;
    }
    for (name, prefix) in CI_VARS {
        if let Some(a) = non_empty(var(name)) {
            return format!("{prefix}{a}");
        }
    }
    let user = non_empty(var("USER"))
        .or_else(|| non_empty(var("LOGNAME")))
        .unwrap_or_else(|| format!("uid{}", uid()));
    format!("{user}@{}", hostname())
}

/// [`resolve`] from the process environment.
pub fn from_env(flag: Option<&str>) -> String {
    resolve(flag, |name| std::env::var(name).ok())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it (or
    // truncates, which the search for NUL below handles).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flag_then_env_then_ci_then_user() {
        let all = env(&[
            ("RECONCILER_ACTOR", "ops-bot"),
            ("GITHUB_ACTOR", "octo"),
            ("USER", "ann"),
        ]);
        assert_eq!(resolve(Some("alice"), &all), "alice");
        assert_eq!(resolve(None, &all), "ops-bot");
        assert_eq!(
            resolve(None, env(&[("GITHUB_ACTOR", "octo"), ("USER", "ann")])),
            "github:octo"
        );
        assert_eq!(
            resolve(None, env(&[("GITLAB_USER_LOGIN", "gl")])),
            "gitlab:gl"
        );
        assert_eq!(
            resolve(None, env(&[("USER", "ann")])),
            format!("ann@{}", hostname())
        );
    }
}
