//! Checks of `jobs:` (on services and on the release) that the schema cannot express.

use super::*;

/// `jobs:` of the services and of the release: names unique per scope (they name the job's
/// container and its history record), a release-level job names its image (there is no
/// service image to default to), networks and volumes declared, a usable timeout, and no key
/// both in `environment` and in `secrets`.
pub(super) fn check_jobs(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    let scopes = spec
        .services
        .iter()
        .filter_map(|(name, s)| {
            s.jobs
                .as_ref()
                .map(|j| (format!("services.{name}.jobs"), j, true))
        })
        .chain(spec.jobs.as_ref().map(|j| ("jobs".to_string(), j, false)));
    for (place, jobs, has_service_image) in scopes {
        let JobsSpec { before, after } = jobs;
        let mut seen: HashSet<&str> = HashSet::new();
        let all = before
            .iter()
            .enumerate()
            .map(|(i, j)| (format!("{place}.before.{i}"), j))
            .chain(
                after
                    .iter()
                    .enumerate()
                    .map(|(i, j)| (format!("{place}.after.{i}"), j)),
            );
        for (at, job) in all {
            if !seen.insert(&job.name) {
                out.push(Issue::new(
                    format!("{at}.name"),
                    format!("job `{}` is declared twice under `{place}`", job.name),
                    Some("give each job of a service (or of the release) its own name".into()),
                ));
            }
            if job.image.is_none() && !has_service_image {
                out.push(Issue::new(
                    at.clone(),
                    format!("release-level job `{}` has no image", job.name),
                    Some(
                        "set `image:`; only a service's job defaults to the service's new image"
                            .into(),
                    ),
                ));
            }
            if job
                .timeout
                .as_ref()
                .and_then(|t| t.parse().ok())
                .is_some_and(|d| d.is_zero())
            {
                out.push(Issue::new(
                    format!("{at}.timeout"),
                    "a timeout of zero kills the job before it starts",
                    Some("give the job time to finish, e.g. `timeout: 5m`".into()),
                ));
            }
            for (net, path) in network_entries(&at, &job.networks) {
                if !spec.networks.contains_key(&net) {
                    out.push(Issue::new(
                        path,
                        format!("network `{net}` is not declared"),
                        Some(format!(
                            "declare it at the top level: `networks: {{ {net}: {{}} }}`"
                        )),
                    ));
                }
            }
            for (i, mount) in job.volumes.iter().enumerate() {
                if let Some(vol) = named_volume(mount).filter(|v| !spec.volumes.contains_key(*v)) {
                    out.push(Issue::new(
                        format!("{at}.volumes.{i}"),
                        format!("volume `{vol}` is not declared"),
                        Some(format!(
                            "declare it at the top level: `volumes: {{ {vol}: {{}} }}`"
                        )),
                    ));
                }
            }
            let as_service = job.as_service("");
            for (key, value) in as_service.environment_pairs() {
                let path = format!("{at}.environment");
                if job.secrets.contains_key(&key) {
                    out.push(Issue::new(
                        path.clone(),
                        format!("`{key}` is set both in `environment` and in `secrets`"),
                        Some(format!("remove `{key}` from `environment`")),
                    ));
                }
                let literal = value.filter(|v| !v.is_empty());
                if literal.is_some_and(|v| looks_secret(&key) || has_url_credentials(&v)) {
                    out.push(Issue::new(
                        path,
                        format!("`{key}` looks like a secret written as a literal value in git"),
                        Some(format!(
                            "move it to the job's `secrets: {{ {key}: {{ env: HOST_VAR }} }}`"
                        )),
                    ));
                }
            }
        }
    }
    out
}
