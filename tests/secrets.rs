//! Secrets are never shown: known secret values are planted in every place the reconciler
//! takes one from (a service secret from the env, an env_file value, a token in the git URL
//! over http, a notification URL token), every command path is run at trace level (validate,
//! diff as text, `--steps` and json, apply, a rolled-back apply, `run`), and every
//! output is searched: stdout and stderr, files under the state dir, notification bodies and
//! container labels. Not one occurrence of any planted value may appear.
//!
//! The search is shown to work: non-secret markers planted the same way (a plain environment
//! value, a commit subject, the release name) are found where they belong, and each secret is
//! shown to have been used (the container has it, the fetch succeeded, the webhook was called).
//!
//! To cover a new path, add one line to `PATHS` (a command), `RUN_ARGS` (a daemon flag) or one
//! call to `Haystack::add`
//! (another output); to cover a new secret, one entry in `Planted::secrets`.
//! The daemon runs with its HTTP endpoint and a webhook secret; its `/metrics`, `/readyz` and a
//! refused webhook are searched too.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::{free_port, show};
use receiver::Receiver;

/// One value planted somewhere, and what it is.
struct Plant {
    what: &'static str,
    value: String,
}

struct Planted {
    secrets: Vec<Plant>,
}

impl Planted {
    fn new(suffix: &str) -> Planted {
        let p = |what, prefix: &str| Plant {
            what,
            value: format!("{prefix}-{suffix}"),
        };
        Planted {
            secrets: vec![
                p("service secret (secrets: env), first value", "svcsecretA"),
                p("service secret (secrets: env), rotated value", "svcsecretB"),
                p("env_file value", "envfilesecret"),
                p("git URL token", "gittoken"),
                p("notification URL token", "hooktoken"),
                p("webhook secret", "webhooksecret"),
            ],
        }
    }

    fn get(&self, what_prefix: &str) -> &str {
        self.secrets
            .iter()
            .find(|p| p.what.starts_with(what_prefix))
            .map(|p| p.value.as_str())
            .unwrap_or_else(|| panic!("no planted {what_prefix}"))
    }
}

/// Every output collected, by name.
#[derive(Default)]
struct Haystack(Vec<(String, String)>);

impl Haystack {
    fn add(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.0.push((name.into(), text.into()));
    }

    fn add_output(&mut self, name: &str, out: &Output) {
        self.add(
            format!("{name}: stdout"),
            String::from_utf8_lossy(&out.stdout),
        );
        self.add(
            format!("{name}: stderr"),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    /// Every file under `dir`, read as bytes (binary files too).
    fn add_tree(&mut self, label: &str, dir: &Path) -> usize {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    n += 1;
                    self.add(
                        format!("{label}: {}", path.display()),
                        String::from_utf8_lossy(&bytes),
                    );
                }
            }
        }
        n
    }

    /// Names of the outputs that contain `value`.
    fn find(&self, value: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, text)| text.contains(value))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

struct GitHttp(Child);

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git http-backend` behind Basic auth on 127.0.0.1 (tests/fixtures/git_http_auth.py).
fn serve_git(repo: &TestRepo, port: u16, token: &str) -> GitHttp {
    let root = repo.path.parent().expect("repo parent");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git_http_auth.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(root)
        .args(["x-access-token", token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let server = GitHttp(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "git http server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn spec(release: &str, image: &str, health_path: &str, env_file: &str, marker: &str) -> String {
    format!(
        r#"version: 1
release: {release}
environment: secrets-test
services:
  api:
    image: {image}
    labels: {{ io.reconciler.test: "1" }}
    environment: {{ PLAIN_MARKER: {marker} }}
    env_file: {env_file}
    secrets: {{ DB_PASSWORD: {{ env: SECRETS_TEST_DB_PASSWORD }} }}
    health: {{ http: {{ port: 8000, path: {health_path}, expect: 200 }}, interval: 200ms, deadline: 3s }}
    stop_grace_period: 1s
notifications:
  - name: audit
    format: json
    url_env: SECRETS_TEST_HOOK_URL
  - name: team
    format: slack
    url_env: SECRETS_TEST_HOOK_URL
"#
    )
}

/// The command paths run against each revision, at trace level. `{url}` is the git URL.
const PATHS: &[(&str, &[&str])] = &[
    ("validate", &["validate", "--repo", "{url}"]),
    ("diff text", &["diff", "--repo", "{url}"]),
    ("diff --steps", &["diff", "--repo", "{url}", "--steps"]),
    (
        "diff json",
        &["diff", "--repo", "{url}", "--output", "json"],
    ),
    ("apply", &["apply", "--repo", "{url}"]),
];

/// `run`'s arguments after `--repo URL` (and `--listen` on a free port). `--retry`: the CLI
/// recorded rev2 as failed, and the daemon is to deploy (and roll back) it all the same.
const RUN_ARGS: &[&str] = &[
    "--interval",
    "300ms",
    "--retry",
    "--webhook-secret-env",
    "SECRETS_TEST_WEBHOOK",
];

/// Commands run after the daemon, against the state it and the CLI left. `{rev1}`: the first
/// revision, applied and current.
const STATE_PATHS: &[(&str, &[&str])] = &[
    ("status", &["status"]),
    ("status json", &["status", "--output", "json"]),
    ("history", &["history"]),
    ("history json", &["history", "--output", "json"]),
    ("lock status", &["lock", "status"]),
    ("rollback", &["rollback", "--to", "{rev1}"]),
    ("resume", &["resume"]),
];

/// Runs `run` at trace level until `done` holds (polled, with a deadline), then stops it with
/// SIGTERM and returns its output.
fn run_daemon(
    state: &Path,
    url: &str,
    env: &[(&str, &str)],
    done: impl Fn() -> bool,
    hay: &mut Haystack,
) -> (Output, bool) {
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.args(["--log-level", "trace", "run", "--repo", url])
        .args(RUN_ARGS)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .env_remove("RUST_LOG")
        .env_remove("RECONCILER_LOG")
        .env_remove("RECONCILER_GIT_TOKEN")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("reconciler run starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut reached = false;
    while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
        if done() {
            reached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The endpoint, while the daemon still runs: what Prometheus and a git host would see.
    for path in ["/metrics", "/readyz"] {
        let reply = common::daemon::get(port, path).expect("the daemon's endpoint answers");
        hay.add(format!("GET {path}"), reply.body);
    }
    let refused = common::daemon::http(
        port,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
        b"{}",
    )
    .expect("the webhook answers");
    assert_eq!(
        refused.status, 401,
        "the webhook secret is in use: {refused:?}"
    );
    hay.add("POST /webhook (bad signature)", refused.body);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < stop_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let status = child.wait().expect("run exits");
    let out = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    (out, reached)
}

fn reconciler(state: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.args(["--log-level", "trace"])
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("RUST_LOG")
        .env_remove("RECONCILER_LOG")
        .env_remove("RECONCILER_GIT_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("reconciler runs")
}

#[test]
fn no_planted_secret_appears_in_any_output() {
    ensure_images(&["app"]);
    let release = TestRelease::new("secrets");
    let suffix = release.name.rsplit('-').next().unwrap_or("x").to_string();
    let planted = Planted::new(&suffix);
    let plain_marker = format!("plainmarker-{suffix}");
    let subject_marker = format!("subjectmarker-{suffix}");

    let hooks = Receiver::start();
    let hook_path = format!("/hook/{}", planted.get("notification URL token"));
    let hook_url = hooks.url(&hook_path);
    let host = tempfile::tempdir().unwrap();
    let env_file = host.path().join("api.env");
    std::fs::write(
        &env_file,
        format!("API_KEY={}\n", planted.get("env_file value")),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let env_file = env_file.to_str().unwrap();
    let state = tempfile::tempdir().unwrap();

    let repo = TestRepo::new();
    let git_port = free_port();
    let _git = serve_git(&repo, git_port, planted.get("git URL token"));
    let url = format!(
        "http://x-access-token:{}@127.0.0.1:{git_port}/ops",
        planted.get("git URL token")
    );

    let mut hay = Haystack::default();
    let mut codes = Vec::new();
    let mut rev1 = String::new();
    // Revision 1 applies; revision 2 (new image, gate never passes) fails and is rolled back,
    // with the service secret rotated so the diff has a sensitive change to show, beside a
    // changed plain value that it does show.
    let revisions = [
        ("reconciler-test/app:v1", "/health", "first value"),
        ("reconciler-test/app:v2", "/no-such-page", "rotated value"),
    ];
    for (i, (image, health, secret_which)) in revisions.iter().enumerate() {
        repo.write(
            "release.yaml",
            &spec(
                &release.name,
                image,
                health,
                env_file,
                &format!("{plain_marker}-{i}"),
            ),
        );
        let revision = repo.commit(&format!("{subject_marker} {i}"));
        if i == 0 {
            rev1 = revision;
        }
        let secret = planted.get(&format!("service secret (secrets: env), {secret_which}"));
        let env = [
            ("SECRETS_TEST_DB_PASSWORD", secret),
            ("SECRETS_TEST_HOOK_URL", hook_url.as_str()),
        ];
        for (name, args) in PATHS {
            let args: Vec<String> = args.iter().map(|a| a.replace("{url}", &url)).collect();
            let out = reconciler(state.path(), &args, &env);
            let name = format!("rev{} {name}", i + 1);
            codes.push((name.clone(), out.status.code()));
            hay.add_output(&name, &out);
            if name == "rev1 apply" {
                assert_eq!(out.status.code(), Some(0), "{}", show(&out));
                // The secret really reached the container: its absence elsewhere means something.
                let env_json =
                    docker(&["inspect", "-f", "{{json .Config.Env}}", &release.obj("api")])
                        .expect("inspect api");
                assert!(env_json.contains(secret), "the container lacks the secret");
                assert!(env_json.contains(planted.get("env_file value")));
            }
        }
    }
    // `run` does not know rev2 failed: it applies it, rolls it back and notifies again.
    let rolled_back = || {
        hooks
            .received(&hook_path)
            .iter()
            .filter(|r| r.body.contains("\"event\":\"rolled_back\""))
            .count()
    };
    assert_eq!(rolled_back(), 1, "the CLI's rolled-back apply notified");
    let env = [
        (
            "SECRETS_TEST_DB_PASSWORD",
            planted.get("service secret (secrets: env), rotated value"),
        ),
        ("SECRETS_TEST_HOOK_URL", hook_url.as_str()),
        ("SECRETS_TEST_WEBHOOK", planted.get("webhook secret")),
    ];
    let (out, reached) = run_daemon(state.path(), &url, &env, || rolled_back() >= 2, &mut hay);
    assert!(reached, "run did not roll rev2 back\n{}", show(&out));
    hay.add_output("run", &out);
    for (name, args) in STATE_PATHS {
        let args: Vec<String> = args.iter().map(|a| a.replace("{rev1}", &rev1)).collect();
        let out = reconciler(state.path(), &args, &env);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", show(&out));
        hay.add_output(name, &out);
    }

    let want_codes: Vec<(String, Option<i32>)> = [
        ("rev1 validate", 0),
        ("rev1 diff text", 1),
        ("rev1 diff --steps", 1),
        ("rev1 diff json", 1),
        ("rev1 apply", 0),
        ("rev2 validate", 0),
        ("rev2 diff text", 1),
        ("rev2 diff --steps", 1),
        ("rev2 diff json", 1),
        ("rev2 apply", 1),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), Some(*c)))
    .collect();
    assert_eq!(codes, want_codes, "every path ran as intended");

    let state_files = hay.add_tree("state file", state.path());
    assert!(state_files > 0, "nothing under the state dir");
    let bodies = hooks.all_bodies();
    assert!(bodies.len() >= 4, "notifications were sent: {bodies:#?}");
    for (i, b) in bodies.iter().enumerate() {
        hay.add(format!("notification body {i}"), b.clone());
    }
    let containers =
        docker(&["ps", "-aq", "--filter", &release.label_filter()]).unwrap_or_default();
    for id in containers.split_whitespace() {
        let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", id]).unwrap_or_default();
        hay.add(format!("labels of container {id}"), labels);
    }

    // The search sees what it should: non-secrets planted the same way are found.
    assert!(
        hay.find(&format!("{plain_marker}-1"))
            .iter()
            .any(|n| n == "rev2 diff text: stdout"),
        "the plain env value is not in the diff: the search is blind"
    );
    assert!(
        hay.find(&subject_marker)
            .iter()
            .any(|n| n.starts_with("notification body")),
        "the commit subject is not in the notifications"
    );
    assert!(
        hay.find(&release.name)
            .iter()
            .any(|n| n.starts_with("labels of container")),
        "no container labels were collected"
    );
    assert!(
        hay.find(" DEBUG ").iter().any(|n| n.ends_with("stderr")),
        "the logs hold no record below info: the trace filter was not applied"
    );

    let leaks: Vec<String> = planted
        .secrets
        .iter()
        .flat_map(|p| {
            hay.find(&p.value)
                .into_iter()
                .map(move |where_| format!("{} ({}) in {where_}", p.what, p.value))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "planted secrets shown:\n{}",
        leaks.join("\n")
    );
    assert!(
        !hooks.received(&hook_path).is_empty(),
        "the notification URL (with its token) was used"
    );
}
