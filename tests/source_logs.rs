//! The git source's log lines. In a binary of its own: tracing caches per-callsite interest
//! globally, so a capture with a thread-local subscriber can miss events while other tests of
//! the same binary hit the same callsites on other threads.

mod common;

use std::sync::{Arc, Mutex};

use common::gitrepo::TestRepo;
use reconciler::source::{GitSource, SourceConfig};

/// A `MakeWriter` that keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn fetches_log_the_revision_and_its_moves() {
    let origin = TestRepo::new();
    origin.write("release.yaml", "v: 1\n");
    let rev1 = origin.commit("first");
    let state = tempfile::tempdir().unwrap();
    let src = GitSource::new(SourceConfig::new(origin.url()), state.path()).unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let rev2 = tracing::subscriber::with_default(subscriber, || {
        src.fetch().unwrap();
        src.fetch().unwrap();
        origin.write("release.yaml", "v: 2\n");
        let rev2 = origin.commit("second");
        src.fetch().unwrap();
        rev2
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("git_fetch")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("fetched") && lines[0].contains(&rev1),
        "{log}"
    );
    assert!(
        lines[1].contains("DEBUG") && lines[1].contains("no new commit"),
        "{log}"
    );
    assert!(
        lines[2].contains("INFO")
            && lines[2].contains("revision moved")
            && lines[2].contains(&rev2),
        "{log}"
    );
    assert!(lines.iter().all(|l| l.contains(&origin.url())), "{log}");
}
