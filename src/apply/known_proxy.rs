//! What the apply knows of the proxy's files without downloading them again: observed for the
//! plan under the deploy lock, then what each switch wrote.

use crate::plan::Action;
use crate::proxy;

/// The content of some of the proxy container's files, as last observed or written by this
/// apply (`None` content: no such file).
#[derive(Debug, Clone, Default)]
pub struct KnownProxyFiles {
    pub container: String,
    pub files: std::collections::BTreeMap<String, Option<String>>,
}

impl KnownProxyFiles {
    /// The previous content of `paths` in `container`, if all of them are known exactly
    /// (text observed lossily, with a replacement character, is read again).
    pub(super) fn previous(
        &self,
        container: &str,
        paths: &[String],
    ) -> Option<Vec<proxy::PreviousFile>> {
        if self.container != container {
            return None;
        }
        paths
            .iter()
            .map(|path| {
                let content = self.files.get(path)?;
                if content.as_deref().is_some_and(|c| c.contains('\u{FFFD}')) {
                    return None;
                }
                Some(proxy::PreviousFile {
                    path: path.clone(),
                    content: content.as_ref().map(|c| c.as_bytes().to_vec()),
                })
            })
            .collect()
    }

    /// Keeps what is known true across `action`: a switch wrote its files; any other step on
    /// the proxy container (recreated, renamed, seeded) makes what was observed stale.
    pub(super) fn after(known: &mut Option<KnownProxyFiles>, action: &Action) {
        match action {
            Action::ConfigureProxy { name, files } => {
                let entry = known.get_or_insert_with(|| KnownProxyFiles {
                    container: name.clone(),
                    files: Default::default(),
                });
                if &entry.container != name {
                    *entry = KnownProxyFiles {
                        container: name.clone(),
                        files: Default::default(),
                    };
                }
                for file in files {
                    entry
                        .files
                        .insert(file.path.clone(), Some(file.content.clone()));
                }
            }
            Action::RenameContainer { from, to, .. } => {
                if known
                    .as_ref()
                    .is_some_and(|k| &k.container == from || &k.container == to)
                {
                    *known = None;
                }
            }
            other => {
                if known
                    .as_ref()
                    .is_some_and(|k| k.container == other.target())
                {
                    *known = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_proxy_files_serve_a_switch_until_something_else_touches_the_proxy() {
        let file = |path: &str, content: &str| proxy::ProxyFile {
            path: path.to_string(),
            content: content.to_string(),
        };
        let paths = vec!["/u.conf".to_string()];
        let mut known = Some(KnownProxyFiles {
            container: "shop-proxy".to_string(),
            files: [("/u.conf".to_string(), Some("old".to_string()))].into(),
        });
        let previous = known
            .as_ref()
            .unwrap()
            .previous("shop-proxy", &paths)
            .unwrap();
        assert_eq!(previous[0].content.as_deref(), Some(&b"old"[..]));
        // Another container, or a path never observed: read it instead.
        assert!(known.as_ref().unwrap().previous("other", &paths).is_none());
        assert!(known
            .as_ref()
            .unwrap()
            .previous("shop-proxy", &["/n.conf".to_string()])
            .is_none());

        // A switch: its files are what the next switch replaces.
        KnownProxyFiles::after(
            &mut known,
            &Action::ConfigureProxy {
                name: "shop-proxy".to_string(),
                files: vec![file("/u.conf", "new")],
            },
        );
        let previous = known
            .as_ref()
            .unwrap()
            .previous("shop-proxy", &paths)
            .unwrap();
        assert_eq!(previous[0].content.as_deref(), Some(&b"new"[..]));

        // A step on another container changes nothing; one on the proxy makes it stale.
        KnownProxyFiles::after(
            &mut known,
            &Action::StartContainer {
                service: "web".to_string(),
                name: "shop-web-green".to_string(),
            },
        );
        assert!(known.is_some());
        KnownProxyFiles::after(
            &mut known,
            &Action::RemoveContainer {
                service: "proxy".to_string(),
                name: "shop-proxy".to_string(),
            },
        );
        assert!(known.is_none());

        // Text observed lossily is never written back from memory.
        let lossy = KnownProxyFiles {
            container: "shop-proxy".to_string(),
            files: [("/u.conf".to_string(), Some("a\u{FFFD}b".to_string()))].into(),
        };
        assert!(lossy.previous("shop-proxy", &paths).is_none());
    }
}
