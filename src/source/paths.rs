//! Repo-relative paths, shared by the git and the local tree so both accept and reject the
//! same paths and report a missing file the same way.

use super::error::{Names, SourceError};

/// How many names an error lists before it says how many more there are.
const LIST_LIMIT: usize = 20;

/// Splits a repo-relative path into components. `""`, `"."` and `"/"` are the root; a leading
/// `/` or `./` is tolerated. `..` is refused: a path from a spec must not escape the tree (for a
/// local directory it would read arbitrary host files).
pub(crate) fn components<'a>(url: &str, path: &'a str) -> Result<Vec<&'a str>, SourceError> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(SourceError::InvalidPath {
                    url: url.to_string(),
                    path: path.to_string(),
                    reason: "`..` is not allowed; paths are relative to the repository root",
                })
            }
            p if p.contains('\\') || p.contains('\0') => {
                return Err(SourceError::InvalidPath {
                    url: url.to_string(),
                    path: path.to_string(),
                    reason: "use `/` as the separator",
                })
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

/// `deploy` + `release.yaml` → `deploy/release.yaml`; `""` + `release.yaml` → `release.yaml`.
pub(crate) fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The error for a path that does not exist: names the deepest directory that does and lists
/// what it holds, so a typo is easy to spot. `list` returns a directory's entry names (with a
/// trailing `/` for directories), or `None` if that prefix is not a directory.
pub(crate) fn not_found(
    url: &str,
    revision: &str,
    comps: &[&str],
    list: impl Fn(&[&str]) -> Option<Vec<String>>,
) -> SourceError {
    for depth in (0..comps.len()).rev() {
        if let Some(mut names) = list(&comps[..depth]) {
            names.sort();
            let more = names.len().saturating_sub(LIST_LIMIT);
            names.truncate(LIST_LIMIT);
            if more > 0 {
                names.push(format!("... and {more} more"));
            }
            let dir = if depth == 0 {
                "/".to_string()
            } else {
                format!("{}/", comps[..depth].join("/"))
            };
            return SourceError::NotFound {
                url: url.to_string(),
                revision: short(revision).to_string(),
                name: comps[depth..].join("/"),
                dir,
                siblings: Names(names),
            };
        }
    }
    SourceError::NotFound {
        url: url.to_string(),
        revision: short(revision).to_string(),
        name: comps.join("/"),
        dir: "/".to_string(),
        siblings: Names::default(),
    }
}

/// A commit id shortened for messages.
pub(crate) fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_normalise_and_refuse_escapes() {
        assert_eq!(components("u", "").unwrap(), Vec::<&str>::new());
        assert_eq!(components("u", "./a//b/").unwrap(), vec!["a", "b"]);
        assert_eq!(components("u", "/a").unwrap(), vec!["a"]);
        assert!(components("u", "a/../../etc").is_err());
    }

    #[test]
    fn join_handles_the_root() {
        assert_eq!(join("", "release.yaml"), "release.yaml");
        assert_eq!(join("deploy/", "release.yaml"), "deploy/release.yaml");
    }

    #[test]
    fn not_found_names_the_deepest_existing_dir() {
        let err = not_found("u", "0123456789abcdef", &["deploy", "release.yaml"], |p| {
            (p == ["deploy"]).then(|| vec!["b.yaml".into(), "a.yaml".into()])
        });
        assert_eq!(
            err.to_string(),
            "source u: `release.yaml` not found at commit 0123456789ab under `deploy/`; files there: a.yaml, b.yaml"
        );
    }
}
