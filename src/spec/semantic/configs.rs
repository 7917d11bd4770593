//! Checks of a service's `configs:`, `reload:` and `ready:` that the schema cannot express.

use super::*;

/// `configs:`, `reload:` and `ready:`: paths that say where they read and write, one file per
/// target, and a reload or probe only with something to reload. (Whether a source exists is
/// known only with the commit's tree: `desired` checks that.)
pub(super) fn check_configs(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    let plain = |p: &str| {
        p.trim_end_matches('/')
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    };
    for (name, s) in &spec.services {
        if s.configs.is_empty() {
            for (key, what) in [("reload", s.reload.is_some()), ("ready", s.ready.is_some())] {
                if what {
                    out.push(Issue::new(
                        svc_path(name, key),
                        format!("`{key}` without `configs`: service `{name}` has no config files to reload"),
                        Some(format!("declare the files under `services.{name}.configs`, or remove `{key}`")),
                    ));
                }
            }
            continue;
        }
        if s.strategy == Strategy::Rolling {
            out.push(Issue::new(
                svc_path(name, "configs"),
                format!("`configs` is not supported on `strategy: rolling` services yet (`{name}`)"),
                Some("use `strategy: recreate` or `blue-green` for this service (config changes never replace its containers), or bake the files into the image".to_string()),
            ));
        }
        let mut targets: HashMap<String, usize> = HashMap::new();
        for (i, c) in s.configs.iter().enumerate() {
            let at = |key: &str| svc_path(name, &format!("configs.{i}.{key}"));
            if !c.target.starts_with('/') || !plain(&c.target[1..]) {
                out.push(Issue::new(
                    at("target"),
                    format!("`{}` is not an absolute path without `.`, `..` or `//`", c.target),
                    Some("write the absolute path in the container, e.g. /etc/prometheus/prometheus.yml".to_string()),
                ));
            }
            // `./x` as `proxy.config` allows.
            if !plain(c.source.strip_prefix("./").unwrap_or(&c.source)) {
                out.push(Issue::new(
                    at("source"),
                    format!("`{}` has empty, `.` or `..` components", c.source),
                    Some("write the path in the repo relative to the directory of release.yaml, e.g. monitoring/prometheus.yml".to_string()),
                ));
            }
            if c.source.ends_with('/') && !c.target.ends_with('/') {
                out.push(Issue::new(
                    at("target"),
                    format!(
                        "the source `{}` is a directory, the target `{}` names a file",
                        c.source, c.target
                    ),
                    Some(format!("end the target with `/`: `{}/`", c.target)),
                ));
            }
            // A file into a directory target lands at `<target><file name>`.
            let key = match (c.target.ends_with('/'), c.source.ends_with('/')) {
                (true, false) => format!(
                    "{}{}",
                    c.target,
                    c.source.rsplit('/').next().unwrap_or(&c.source)
                ),
                _ => c.target.trim_end_matches('/').to_string(),
            };
            if let Some(first) = targets.insert(key, i) {
                out.push(Issue::new(
                    at("target"),
                    format!("`{}` is also the target of configs.{first}", c.target),
                    Some("give each config its own target".to_string()),
                ));
            }
        }
        // A directory target is the reconciler's: files in it that are not in the source are
        // removed, so another config inside it would be removed too.
        for (i, c) in s.configs.iter().enumerate() {
            for (j, dir) in s.configs.iter().enumerate() {
                let owns = dir.source.ends_with('/') && dir.target.ends_with('/');
                if i != j && owns && c.target.starts_with(&dir.target) {
                    out.push(Issue::new(
                        svc_path(name, &format!("configs.{i}.target")),
                        format!("`{}` is inside the directory target of configs.{j} (`{}`)", c.target, dir.target),
                        Some("put the file in that directory's source in the repo, or give it a target outside the directory".to_string()),
                    ));
                }
            }
        }
    }
    out
}
