//! Snapshots of a stateful service, end to end with the real `reconciler` binary, a real git
//! repo and the real postgres image: a release that changes a service depending on the
//! database takes a `pg_dump -Fc` snapshot first; it is in history and the index, verifies
//! (sha256 and `pg_restore --list`), retention keeps the current and previous deploys'
//! snapshots; and the restore procedure of docs/snapshots.md brings a dropped table back.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::show;
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Host {
    release: TestRelease,
    repo: TestRepo,
    state: tempfile::TempDir,
}

impl Host {
    fn new(test: &str) -> Host {
        ensure_images(&["postgres", "app"]);
        Host {
            release: TestRelease::new(test),
            repo: TestRepo::new(),
            state: tempfile::tempdir().expect("state dir"),
        }
    }

    /// Commits the release: `db` (postgres, snapshotted, keeping the newest `keep_last`) and
    /// `web`, which depends on it and whose `MODE` is `mode`.
    fn commit(&self, mode: &str, keep_last: u32) -> String {
        let spec = format!(
            r#"version: 1
release: {release}
volumes:
  pgdata: {{}}
services:
  db:
    image: reconciler-test/postgres:15
    environment: {{ POSTGRES_HOST_AUTH_METHOD: trust, POSTGRES_DB: app }}
    volumes: ["pgdata:/var/lib/postgresql/data"]
    labels: {{ io.reconciler.test: "1" }}
    stop_grace_period: 10s
    health: {{ exec: {{ command: [pg_isready, -h, 127.0.0.1, -U, postgres, -d, app] }}, interval: 300ms, deadline: 60s }}
    snapshot:
      exec: [pg_dump, -Fc, -U, postgres, app]
      format: postgres-custom
      keep: {{ last: {keep_last} }}
      timeout: 2m
  web:
    image: reconciler-test/app:v1
    depends_on: [db]
    labels: {{ io.reconciler.test: "1" }}
    environment: {{ MODE: "{mode}" }}
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health, expect: 200 }}, interval: 200ms, deadline: 30s }}
"#,
            release = self.release.name,
        );
        self.repo.write("release.yaml", &spec);
        self.repo.commit(mode)
    }

    fn run(&self, args: &[&str]) -> Output {
        // --state-dir first: `snapshots restore` passes what follows `--` to pg_restore.
        Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .arg("--state-dir")
            .arg(self.state.path())
            .args(args)
            .env("RECONCILER_LOG", "info")
            .env("RECONCILER_ACTOR", "snapshot-test")
            .output()
            .expect("reconciler runs")
    }

    fn apply(&self) {
        let out = self.run(&["apply", "--repo", &self.repo.url()]);
        assert_eq!(out.status.code(), Some(0), "apply: {}", show(&out));
    }

    fn dir(&self) -> PathBuf {
        self.state.path().join("releases").join(&self.release.name)
    }

    /// `snapshots list --output json`, checked against the index's published schema.
    fn snapshots(&self) -> Vec<Value> {
        let out = self.run(&["snapshots", "list", "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "list: {}", show(&out));
        let index: Value = serde_json::from_slice(&out.stdout).expect("list --output json");
        common::assert_schema("snapshots.schema.json", &index);
        index["snapshots"].as_array().cloned().unwrap_or_default()
    }

    fn last_history_entry(&self) -> Value {
        let path = self.dir().join("history.json");
        let text = std::fs::read_to_string(&path).expect("history.json");
        let history: Value = serde_json::from_str(&text).expect("history JSON");
        common::assert_schema("history.schema.json", &history);
        history["entries"]
            .as_array()
            .and_then(|e| e.last())
            .cloned()
            .expect("a history entry")
    }

    fn psql(&self, sql: &str) -> String {
        let db = self.release.obj("db");
        docker(&[
            "exec",
            &db,
            "psql",
            "-U",
            "postgres",
            "-d",
            "app",
            "-v",
            "ON_ERROR_STOP=1",
            "-qtAc",
            sql,
        ])
        .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
        .trim()
        .to_string()
    }
}

fn sha256_of(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("snapshot file")))
}

#[test]
fn a_dependent_change_takes_a_snapshot_that_verifies_and_retention_keeps_current_and_previous() {
    let host = Host::new("snap-retention");
    host.commit("one", 1);
    host.apply();
    // First deploy: the database was not running, so there was nothing to snapshot.
    assert!(host.snapshots().is_empty());
    assert!(host.last_history_entry().get("snapshots").is_none());

    host.psql("CREATE TABLE orders (id int PRIMARY KEY, item text)");
    // About 1 MB of dump, more than the pipes hold: `pg_restore --list` stops reading after
    // the table of contents, and verify must take that as the success it is.
    host.psql("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 30000) g");

    // Only `web` changes; it depends on `db`, so `db` is snapshotted first.
    host.commit("two", 1);
    let diff = host.run(&["diff", "--repo", &host.repo.url(), "--steps"]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(text.contains("snapshot"), "diff --steps: {}", show(&diff));
    host.apply();
    let snaps = host.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    let first = &snaps[0];
    assert_eq!(first["service"], "db");
    assert_eq!(first["format"], "postgres-custom");
    let file = host.dir().join(first["file"].as_str().unwrap());
    assert_eq!(first["sha256"].as_str().unwrap(), sha256_of(&file));
    assert_eq!(
        first["size"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert!(std::fs::read(&file).unwrap().starts_with(b"PGDMP"));
    assert!(first["size"].as_u64().unwrap() > 512 * 1024, "{first:#}");
    let entry = host.last_history_entry();
    let recorded = &entry["snapshots"][0];
    assert_eq!(recorded["id"], first["id"], "{entry:#}");
    assert_eq!(recorded["sha256"], first["sha256"]);
    assert!(recorded["duration_ms"].is_u64());
    assert_eq!(first["deploy"], entry["id"]);

    let verify = host.run(&["snapshots", "verify"]);
    let out = String::from_utf8_lossy(&verify.stdout).to_string();
    assert_eq!(verify.status.code(), Some(0), "verify: {}", show(&verify));
    assert!(
        out.contains("pg_restore --list") && out.contains("archive entries"),
        "{out}"
    );
    assert!(!out.contains("FAILED"), "{out}");

    // keep.last = 1, but the snapshots of the current and previous deploys always stay.
    host.commit("three", 1);
    host.apply();
    assert_eq!(host.snapshots().len(), 2);
    host.commit("four", 1);
    host.apply();
    let snaps = host.snapshots();
    let deploys: Vec<&str> = snaps.iter().filter_map(|s| s["deploy"].as_str()).collect();
    let entry = host.last_history_entry();
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    assert!(
        deploys.contains(&entry["id"].as_str().unwrap()),
        "{deploys:?}"
    );
    assert!(!deploys.contains(&first["deploy"].as_str().unwrap()));
    assert!(!file.exists(), "the pruned snapshot's file is removed");

    // A changed file fails verification, with a nonzero exit.
    let kept = host.dir().join(snaps[0]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes.push(0);
    std::fs::write(&kept, bytes).unwrap();
    let verify = host.run(&["snapshots", "verify", snaps[0]["id"].as_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(1), "verify: {}", show(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("FAILED"));
}

#[test]
fn the_documented_restore_brings_a_dropped_table_back() {
    let host = Host::new("snap-restore");
    host.commit("one", 5);
    host.apply();
    host.psql("CREATE TABLE customers (id int PRIMARY KEY, name text)");
    host.psql("INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 1000) g");
    host.commit("two", 5);
    host.apply();
    let snaps = host.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    let file = host.dir().join(snaps[0]["file"].as_str().unwrap());

    // The migration that went wrong.
    host.psql("DROP TABLE customers");
    assert_eq!(host.psql("SELECT to_regclass('customers') IS NULL"), "t");

    // docs/snapshots.md, "Restore by hand": the file on the stdin of pg_restore in the
    // running database container.
    let db = host.release.obj("db");
    let out = Command::new("docker")
        .args([
            "exec",
            "-i",
            &db,
            "pg_restore",
            "--clean",
            "--if-exists",
            "--single-transaction",
            "-U",
            "postgres",
            "-d",
            "app",
        ])
        .stdin(Stdio::from(std::fs::File::open(&file).unwrap()))
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "pg_restore: {}", show(&out));
    assert_eq!(host.psql("SELECT count(*) FROM customers"), "1000");

    // The same with `reconciler snapshots restore`.
    host.psql("DROP TABLE customers");
    let id = snaps[0]["id"].as_str().unwrap();
    let out = host.run(&[
        "snapshots",
        "restore",
        id,
        "--",
        "-U",
        "postgres",
        "-d",
        "app",
    ]);
    assert_eq!(out.status.code(), Some(0), "restore: {}", show(&out));
    assert_eq!(
        host.psql("SELECT count(*), max(name) FROM customers"),
        "1000|customer 999"
    );
}

#[test]
fn a_failing_snapshot_fails_the_release_before_anything_changed() {
    let host = Host::new("snap-fails");
    host.commit("one", 5);
    host.apply();
    let web = host.release.obj("web");
    let web_id = docker(&["inspect", "-f", "{{.Id}}", &web]).unwrap();

    // The dump names a database that does not exist; `web` changes, so it runs first.
    host.commit("two", 5);
    let yaml = std::fs::read_to_string(host.repo.path.join("release.yaml")).unwrap();
    host.repo.write(
        "release.yaml",
        &yaml.replace(
            "exec: [pg_dump, -Fc, -U, postgres, app]",
            "exec: [pg_dump, -Fc, -U, postgres, nosuchdb]",
        ),
    );
    host.repo.commit("snapshot of a database that is not there");
    let out = host.run(&["apply", "--repo", &host.repo.url()]);
    assert_eq!(out.status.code(), Some(1), "apply: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nosuchdb") && stderr.contains("fix:"),
        "{stderr}"
    );

    // Nothing changed: the same web container runs, no snapshot on record, no file left.
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &web]).unwrap(), web_id);
    assert!(host.snapshots().is_empty());
    let entry = host.last_history_entry();
    assert_eq!(entry["outcome"], "failed", "{entry:#}");
    assert_eq!(entry["failure"]["step"]["action"], "snapshot", "{entry:#}");
    let leftovers: Vec<_> = std::fs::read_dir(host.dir().join("snapshots/db"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
