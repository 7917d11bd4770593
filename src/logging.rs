//! The tracing subscriber, with a cap on libraries that log too much to be safe.
//!
//! bollard logs whole Docker API request bodies at debug/trace, and a container's create body
//! holds its environment, secrets included; hyper, reqwest and h2 can log request targets
//! (a webhook URL carries its token). Whatever filter the operator asks for (`--log-level
//! trace`, `RUST_LOG=bollard=trace`), records from these crates above `info` are dropped. The
//! cap is a second filter that every record must also pass, so no directive can lift it.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Crates whose debug/trace output can carry secrets.
pub const CAPPED: [&str; 6] = ["bollard", "hyper", "hyper_util", "reqwest", "h2", "rustls"];

/// The most any capped crate may log.
pub const CAP: LevelFilter = LevelFilter::INFO;

/// The cap as a filter: everything passes except capped crates above [`CAP`].
pub fn cap() -> Targets {
    CAPPED
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(*c, CAP)
        })
}

/// Installs the global subscriber on stderr. `json` selects JSON lines; `level` is used when
/// `RUST_LOG` is not set (an unparsable filter falls back to `info`).
pub fn init(json: bool, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let layer = if json {
        fmt.json().with_filter(filter).with_filter(cap()).boxed()
    } else {
        fmt.with_filter(filter).with_filter(cap()).boxed()
    };
    // Fails only if a subscriber is already set (tests); the first one stays.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_cap_holds_capped_crates_at_info_and_passes_the_rest() {
        let cap = cap();
        assert!(cap.would_enable("bollard::docker", &Level::INFO));
        assert!(!cap.would_enable("bollard::docker", &Level::DEBUG));
        assert!(!cap.would_enable("hyper_util::client::legacy", &Level::TRACE));
        assert!(!cap.would_enable("reqwest::connect", &Level::DEBUG));
        assert!(cap.would_enable("reconciler::apply", &Level::TRACE));
    }
}
