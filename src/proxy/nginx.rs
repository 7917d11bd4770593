//! Delivering config into the running nginx container, checking it, and reloading gracefully.
//!
//! Reload is always SIGHUP to the master, never a restart: the master re-reads its config,
//! starts new workers and tells the old ones to finish their in-flight requests and exit
//! ("worker process is shutting down"). We confirm the reload by watching the worker PIDs
//! change, listed by the engine's `top` endpoint (one request, nothing run in the container),
//! else in the container with `ps` (procps or busybox) or from /proc with `sh`; an image with
//! none of those still reloads, only unconfirmed (the caller's verify probe through the proxy
//! then tells).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::ProxyError;
use crate::engine::{Engine, EngineError};

/// One file to deliver into the proxy container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyFile {
    /// Absolute path inside the container.
    pub path: String,
    pub content: String,
}

/// A file's content before [`install`] replaced it; `None` when it did not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousFile {
    pub path: String,
    pub content: Option<Vec<u8>>,
}

impl PreviousFile {
    /// The previous content as text, e.g. for [`super::serving_colors`].
    pub fn text(&self) -> Option<String> {
        self.content
            .as_deref()
            .map(|c| String::from_utf8_lossy(c).into_owned())
    }
}

/// `nginx -t` parses everything and resolves upstream names; a slow DNS answer is the only
/// thing that makes it take more than a moment.
const CONFIG_TEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after SIGHUP we wait for new workers before calling the reload failed.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);
/// Between two looks at the process list while waiting for the reload: a look through the
/// engine's `top` costs tens of milliseconds, and nginx usually has its new workers in less
/// than a hundred.
const RELOAD_POLL: Duration = Duration::from_millis(20);
const PS_TIMEOUT: Duration = Duration::from_secs(5);

/// Lists `pid args` from /proc with only `sh` and `tr`, for images without `ps` (the official
/// Debian-based nginx image has none). A constant script: nothing from input goes in it.
const PROC_SCRIPT: &str = r#"for d in /proc/[0-9]*; do printf '%s ' "${d#/proc/}"; tr '\0' ' ' < "$d/cmdline"; echo; done 2>/dev/null"#;

/// The process listings tried, in order: procps needs `-e` to list every process; busybox
/// `ps` lists all by default and may refuse `-e`; then /proc read by hand; last, busybox
/// without its applet links (Debian's `busybox` package).
const PS_COMMANDS: [&[&str]; 4] = [
    &["ps", "-e", "-o", "pid=,args="],
    &["ps", "-o", "pid,args"],
    &["sh", "-c", PROC_SCRIPT],
    &["busybox", "ps", "-o", "pid,args"],
];

/// nginx's processes as `ps` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NginxProcesses {
    /// Workers serving the current config.
    workers: BTreeSet<u32>,
    /// Workers of an earlier config, finishing in-flight requests.
    shutting_down: BTreeSet<u32>,
}

/// Parses `pid args` lines (any header is skipped: its first field is not a number). `None`
/// when no nginx master shows: this `ps` does not see the container's processes, or nginx is
/// not what runs there.
fn parse_ps(output: &str) -> Option<NginxProcesses> {
    let mut procs = NginxProcesses::default();
    let mut master = false;
    for line in output.lines() {
        let line = line.trim();
        let Some((pid, args)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let args = args.trim();
        if args.starts_with("nginx: master process") {
            master = true;
        } else if let Some(rest) = args.strip_prefix("nginx: worker process") {
            if rest.contains("is shutting down") {
                procs.shutting_down.insert(pid);
            } else {
                procs.workers.insert(pid);
            }
        }
    }
    master.then_some(procs)
}

/// How nginx's processes are listed: the engine's `top` (pids of the host), or one of
/// [`PS_COMMANDS`] run in the container (pids of the container). One listing is used for
/// all the looks of one reload, so the pids compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lister {
    Top,
    Exec(usize),
}

const LISTERS: [Lister; 5] = [
    Lister::Top,
    Lister::Exec(0),
    Lister::Exec(1),
    Lister::Exec(2),
    Lister::Exec(3),
];

/// Lists nginx's processes one way; `None` when that way is missing or its output is not
/// usable.
async fn ps_with(
    engine: &Engine,
    container: &str,
    lister: Lister,
) -> Result<Option<NginxProcesses>, ProxyError> {
    let argv: Vec<String> = match lister {
        Lister::Top => {
            return match engine.top(container).await {
                Ok(listing) => Ok(parse_ps(&listing)),
                Err(source @ EngineError::NotFound { .. }) => Err(ProxyError::Processes {
                    container: container.to_string(),
                    source,
                }),
                // An engine whose host has no `ps` answers 500: the exec listings remain.
                Err(e) => {
                    tracing::debug!(container, error = %e, "the engine's top is not usable");
                    Ok(None)
                }
            };
        }
        Lister::Exec(i) => PS_COMMANDS[i].iter().map(|s| s.to_string()).collect(),
    };
    match engine.exec(container, &argv, PS_TIMEOUT).await {
        Ok(out) if out.exit_code == 0 => Ok(parse_ps(&out.output)),
        Ok(_) => Ok(None),
        Err(source @ EngineError::NotFound { .. }) => Err(ProxyError::Processes {
            container: container.to_string(),
            source,
        }),
        // A missing binary fails the exec itself on some engines; treat it as "no such ps".
        Err(e) => {
            tracing::debug!(container, command = ?argv, error = %e, "ps not usable");
            Ok(None)
        }
    }
}

/// The listing that worked last in each proxy container, by name. Each failing `docker exec`
/// costs tens of milliseconds, and a switch lists processes many times (before the reload,
/// while confirming it, while draining), so the search is done once per container. A stale
/// entry (the container was recreated from another image) only costs one failed try.
static WORKING_PS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, Lister>>,
> = std::sync::LazyLock::new(Default::default);

/// Finds a listing that works for this container, and what it saw.
async fn find_ps(
    engine: &Engine,
    container: &str,
) -> Result<Option<(Lister, NginxProcesses)>, ProxyError> {
    let known = WORKING_PS
        .lock()
        .ok()
        .and_then(|m| m.get(container).copied());
    if let Some(lister) = known {
        if let Some(procs) = ps_with(engine, container, lister).await? {
            return Ok(Some((lister, procs)));
        }
    }
    for lister in LISTERS {
        if Some(lister) == known {
            continue;
        }
        if let Some(procs) = ps_with(engine, container, lister).await? {
            if let Ok(mut m) = WORKING_PS.lock() {
                m.insert(container.to_string(), lister);
            }
            return Ok(Some((lister, procs)));
        }
    }
    Ok(None)
}

/// How many nginx workers are shutting down after a reload (old workers finishing in-flight
/// requests); `None` if the image has no usable `ps` (the caller then waits its full drain
/// period).
pub async fn old_workers(engine: &Engine, container: &str) -> Result<Option<usize>, ProxyError> {
    Ok(find_ps(engine, container)
        .await?
        .map(|(_, procs)| procs.shutting_down.len()))
}

/// `nginx -t -q` in the container: Ok, or `ConfigTest` with nginx's own message.
async fn config_test(engine: &Engine, container: &str, files: &[String]) -> Result<(), ProxyError> {
    let argv = ["nginx", "-t", "-q"].map(String::from);
    let out = engine
        .exec(container, &argv, CONFIG_TEST_TIMEOUT)
        .await
        .map_err(|source| ProxyError::Test {
            container: container.to_string(),
            source,
        })?;
    if out.exit_code == 0 {
        return Ok(());
    }
    let message = out.output.trim();
    Err(ProxyError::ConfigTest {
        container: container.to_string(),
        files: files.to_vec(),
        message: if message.is_empty() {
            format!(
                "`nginx -t` exited with {} and printed nothing",
                out.exit_code
            )
        } else {
            message.to_string()
        },
    })
}

/// Whether the reload was seen to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// New workers were running after this long.
    Confirmed(Duration),
    /// Signalled, but the image has no usable `ps` to confirm it.
    Unconfirmed,
}

/// SIGHUP to nginx's master, then waits (up to [`RELOAD_DEADLINE`]) until a worker runs whose
/// PID was not there before the signal, and none of the workers from before still accepts:
/// nginx starts new workers only once the new config is loaded (it keeps the old workers and
/// config if loading fails), and an old worker retitles itself "is shutting down" as it closes
/// its listening sockets. Only then does every new connection get the new config; new PIDs
/// alone are not enough, as the old workers keep accepting until they get the master's QUIT.
/// Requests already in flight on old workers finish there (see [`old_workers`]). A worker
/// respawned after a crash would look like a reload; rare enough.
///
/// `before`: nginx's processes listed just before the signal ([`find_ps`]), which the caller
/// takes while `nginx -t` runs.
async fn signal_and_wait(
    engine: &Engine,
    container: &str,
    before: Option<(Lister, NginxProcesses)>,
) -> Result<Reloaded, ProxyError> {
    let started = Instant::now();
    engine
        .signal_container(container, "SIGHUP")
        .await
        .map_err(|source| ProxyError::Signal {
            container: container.to_string(),
            source,
        })?;
    let Some((ps, before)) = before else {
        tracing::warn!(
            container,
            "no usable `ps` in the proxy image: reload sent but not confirmed"
        );
        return Ok(Reloaded::Unconfirmed);
    };
    let known: BTreeSet<u32> = before
        .workers
        .union(&before.shutting_down)
        .copied()
        .collect();
    loop {
        if let Some(now) = ps_with(engine, container, ps).await? {
            let fresh = now.workers.iter().any(|pid| !known.contains(pid));
            let stale = now.workers.iter().any(|pid| before.workers.contains(pid));
            if fresh && !stale {
                let took = started.elapsed();
                tracing::debug!(container, took_ms = took.as_millis(), "nginx reloaded");
                return Ok(Reloaded::Confirmed(took));
            }
        }
        if started.elapsed() >= RELOAD_DEADLINE {
            return Err(ProxyError::ReloadNotSeen {
                container: container.to_string(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        tokio::time::sleep(RELOAD_POLL).await;
    }
}

/// Tests the config in place and reloads gracefully (no files change). Useful when the files
/// are right but nginx must resolve the upstream names again (a container got a new address).
pub async fn reload(engine: &Engine, container: &str) -> Result<Reloaded, ProxyError> {
    let before = test_and_list(engine, container, &[]).await?;
    signal_and_wait(engine, container, before).await
}

/// `nginx -t` and the process listing the reload is confirmed against, together: both are
/// engine requests of tens of milliseconds, and neither changes anything.
async fn test_and_list(
    engine: &Engine,
    container: &str,
    files: &[String],
) -> Result<Option<(Lister, NginxProcesses)>, ProxyError> {
    let (tested, before) = tokio::join!(
        config_test(engine, container, files),
        find_ps(engine, container)
    );
    tested?;
    before
}

/// Writes `content` at `path`, or removes the file for `None`.
async fn put(
    engine: &Engine,
    container: &str,
    path: &str,
    content: Option<&[u8]>,
) -> Result<(), EngineError> {
    match content {
        Some(content) => engine.write_file(container, path, content).await,
        None => engine.remove_file(container, path).await,
    }
}

/// Puts `previous` back, last read first, so a path named twice ends with its original.
/// Returns the failure (wrapped around `cause`) if a file could not be put back.
async fn put_back(
    engine: &Engine,
    container: &str,
    previous: &[PreviousFile],
    cause: ProxyError,
) -> ProxyError {
    for file in previous.iter().rev() {
        if let Err(source) = put(engine, container, &file.path, file.content.as_deref()).await {
            return ProxyError::RollbackFailed {
                container: container.to_string(),
                path: file.path.clone(),
                source,
                cause: Box::new(cause),
            };
        }
    }
    cause
}

/// The current content of each of `paths` in the proxy container (`None`: no such file): what
/// [`install`] will replace, so a caller can record it before the switch starts.
pub async fn read_files(
    engine: &Engine,
    container: &str,
    paths: &[String],
) -> Result<Vec<PreviousFile>, ProxyError> {
    let contents = engine
        .read_files(container, paths)
        .await
        .map_err(|source| ProxyError::Read {
            container: container.to_string(),
            path: paths.join(", "),
            source,
        })?;
    Ok(paths
        .iter()
        .zip(contents)
        .map(|(path, content)| PreviousFile {
            path: path.clone(),
            content,
        })
        .collect())
}

/// The shared body of `install` and `restore`: write the wanted content over `previous` (what
/// is there now, path for path; read here when it does not match `wanted`), test, reload; on
/// any failure put everything back as it was.
async fn replace(
    engine: &Engine,
    container: &str,
    wanted: &[(String, Option<Vec<u8>>)],
    previous: Option<Vec<PreviousFile>>,
) -> Result<Vec<PreviousFile>, ProxyError> {
    let paths: Vec<String> = wanted.iter().map(|(p, _)| p.clone()).collect();
    let previous = match previous {
        Some(previous) if previous.iter().map(|p| &p.path).eq(paths.iter()) => previous,
        _ => read_files(engine, container, &paths).await?,
    };

    for (i, (path, content)) in wanted.iter().enumerate() {
        if let Err(source) = put(engine, container, path, content.as_deref()).await {
            let cause = ProxyError::Write {
                container: container.to_string(),
                path: path.clone(),
                source,
            };
            return Err(put_back(engine, container, &previous[..i], cause).await);
        }
    }

    let before = match test_and_list(engine, container, &paths).await {
        Ok(before) => before,
        // nginx never loaded the rejected files (or was not signalled, if the listing failed):
        // putting them back is all the undo needed.
        Err(cause) => return Err(put_back(engine, container, &previous, cause).await),
    };

    if let Err(cause) = signal_and_wait(engine, container, before).await {
        // The new config may or may not be live: put the old files back and reload once more
        // so what is on disk and what serves agree again.
        let err = put_back(engine, container, &previous, cause).await;
        if let Err(e) = engine.signal_container(container, "SIGHUP").await {
            tracing::warn!(container, error = %e, "reload after putting the previous files back failed");
        }
        return Err(err);
    }
    Ok(previous)
}

/// Delivers `files` into the running nginx container: reads the previous content of each,
/// writes the new, runs `nginx -t`; if that fails, puts every previous file back (removing
/// files that did not exist) and returns [`ProxyError::ConfigTest`] with nginx's message. If it
/// passes, sends SIGHUP (graceful reload) and waits until new workers run (see
/// [`Reloaded`]). Returns the previous contents, for [`restore`].
pub async fn install(
    engine: &Engine,
    container: &str,
    files: &[ProxyFile],
) -> Result<Vec<PreviousFile>, ProxyError> {
    replace(engine, container, &wanted(files), None).await
}

/// [`install`] over `previous`, the files as [`read_files`] returned them just before (the
/// journal records them before the switch starts): read once per switch, not twice.
pub async fn install_over(
    engine: &Engine,
    container: &str,
    files: &[ProxyFile],
    previous: Vec<PreviousFile>,
) -> Result<Vec<PreviousFile>, ProxyError> {
    replace(engine, container, &wanted(files), Some(previous)).await
}

fn wanted(files: &[ProxyFile]) -> Vec<(String, Option<Vec<u8>>)> {
    files
        .iter()
        .map(|f| (f.path.clone(), Some(f.content.as_bytes().to_vec())))
        .collect()
}

/// Puts previous contents back (removing files that did not exist) and reloads after
/// `nginx -t`: the undo of [`install`]. If the test fails, the files are left as they were.
pub async fn restore(
    engine: &Engine,
    container: &str,
    previous: &[PreviousFile],
) -> Result<(), ProxyError> {
    let wanted: Vec<(String, Option<Vec<u8>>)> = previous
        .iter()
        .map(|p| (p.path.clone(), p.content.clone()))
        .collect();
    replace(engine, container, &wanted, None).await.map(|_| ())
}

/// Writes `files` into a created-but-not-started container: no test and no reload (nothing
/// runs yet; nginx checks its config when it starts). Used before the proxy's first start.
pub async fn seed(engine: &Engine, container: &str, files: &[ProxyFile]) -> Result<(), ProxyError> {
    for file in files {
        engine
            .write_file(container, &file.path, file.content.as_bytes())
            .await
            .map_err(|source| ProxyError::Write {
                container: container.to_string(),
                path: file.path.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_procps_and_busybox_output() {
        let busybox = "PID   COMMAND\n    1 nginx: master process nginx -g daemon off;\n   11 nginx: worker process\n   12 nginx: worker process is shutting down\n   13 busybox ps -o pid,args\n";
        let procs = parse_ps(busybox).unwrap();
        assert_eq!(procs.workers, BTreeSet::from([11]));
        assert_eq!(procs.shutting_down, BTreeSet::from([12]));

        let procps = "      1 nginx: master process nginx -g daemon off;\n     20 nginx: worker process\n     21 nginx: worker process\n";
        assert_eq!(parse_ps(procps).unwrap().workers, BTreeSet::from([20, 21]));
    }

    #[test]
    fn parses_the_proc_listing() {
        // The /proc script: NULs turned to spaces, so each line ends in one.
        let proc = "1 nginx: master process nginx -g daemon off; \n7 nginx: worker process is shutting down \n9 nginx: worker process \n12 sh -c for d in ... \n";
        let procs = parse_ps(proc).unwrap();
        assert_eq!(procs.workers, BTreeSet::from([9]));
        assert_eq!(procs.shutting_down, BTreeSet::from([7]));
    }

    #[test]
    fn no_master_means_unusable() {
        assert_eq!(parse_ps("PID COMMAND\n 5 ps\n"), None);
        assert_eq!(parse_ps(""), None);
    }
}
