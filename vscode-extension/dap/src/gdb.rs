//! A stock gdb driven through gdb/MI (`gdb --interpreter=mi3`): commands with tokens and
//! their results, asynchronous records as events.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::mi::{self, AsyncKind, MiRecord, MiValue, ResultClass, StreamKind};

/// Errors of the gdb process and its commands.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// gdb is not installed (or not at the given path).
    #[error(
        "gdb not found ({path}): install Debian's `gdb` package (sudo apt install gdb), or set `gdbPath` in the launch configuration"
    )]
    Missing {
        /// The program that was started.
        path: String,
    },
    /// gdb could not be started for another reason.
    #[error("cannot start gdb ({path})")]
    Spawn {
        /// The program that was started.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// gdb exited or closed its pipes.
    #[error("gdb exited")]
    Exited,
    /// A command failed: gdb's message.
    #[error("{0}")]
    Command(String),
}

/// The answer to one MI command.
#[derive(Debug, Clone)]
pub struct MiOutput {
    /// The result class (never `Error`: errors are [`GdbError::Command`]).
    pub class: ResultClass,
    /// Its results (a tuple).
    pub results: MiValue,
    /// Console and target stream text printed while the command ran (e.g. a `monitor`
    /// reply).
    pub stream: String,
}

/// Something gdb reported on its own.
#[derive(Debug, Clone)]
pub enum GdbEvent {
    /// `*stopped`, `*running`, `=thread-created`, …
    Async {
        /// Exec, status or notify.
        kind: AsyncKind,
        /// The class, e.g. `stopped`.
        class: String,
        /// Its results.
        results: MiValue,
    },
    /// Stream text outside any command (e.g. `Remote connection closed`).
    Stream(StreamKind, String),
    /// A second, failing result for a command already answered: a resume that gdb gave up
    /// after its `^running` (e.g. a watchpoint it could not insert).
    CommandFailed {
        /// gdb's message.
        msg: String,
        /// gdb's log lines printed since the previous result.
        log: String,
    },
    /// gdb's stdout closed.
    Exited,
}

#[derive(Default)]
struct Pending {
    waiters: BTreeMap<u64, oneshot::Sender<Result<MiOutput, GdbError>>>,
    stream: String,
    log: String,
}

/// A running gdb.
pub struct Gdb {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Mutex<Pending>>,
    next_token: Mutex<u64>,
    child: Mutex<Child>,
}

impl std::fmt::Debug for Gdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gdb").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gdb {
    /// Starts `program` (`gdb`) in MI mode; its events go to `events_tx`.
    pub fn spawn(
        program: &Path,
        events_tx: mpsc::UnboundedSender<GdbEvent>,
    ) -> Result<Gdb, GdbError> {
        let path = program.display().to_string();
        let mut child = Command::new(program)
            .args(["--interpreter=mi3", "-nx", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    GdbError::Missing { path: path.clone() }
                } else {
                    GdbError::Spawn {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(GdbError::Exited);
        };
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!("gdb> {line}");
                let record = match mi::parse_line(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("hv dap: {e}");
                        continue;
                    }
                };
                match record {
                    MiRecord::Prompt => {}
                    MiRecord::Result {
                        token,
                        class,
                        results,
                    } => {
                        let mut pending = lock(&p);
                        let stream = std::mem::take(&mut pending.stream);
                        let log = std::mem::take(&mut pending.log);
                        let waiter = token.and_then(|t| pending.waiters.remove(&t));
                        drop(pending);
                        if waiter.is_none() && class == ResultClass::Error {
                            let msg = results.str("msg").unwrap_or("gdb error").to_owned();
                            let _ = events_tx.send(GdbEvent::CommandFailed { msg, log });
                            continue;
                        }
                        let answer = if class == ResultClass::Error {
                            Err(GdbError::Command(
                                results.str("msg").unwrap_or("gdb error").to_owned(),
                            ))
                        } else {
                            Ok(MiOutput {
                                class,
                                results,
                                stream,
                            })
                        };
                        if let Some(w) = waiter {
                            let _ = w.send(answer);
                        }
                    }
                    MiRecord::Async {
                        kind,
                        class,
                        results,
                    } => {
                        let _ = events_tx.send(GdbEvent::Async {
                            kind,
                            class,
                            results,
                        });
                    }
                    MiRecord::Stream { kind, text } => {
                        let mut pending = lock(&p);
                        if kind == StreamKind::Log {
                            pending.log.push_str(&text);
                        }
                        if !pending.waiters.is_empty() && kind != StreamKind::Log {
                            pending.stream.push_str(&text);
                        } else if pending.waiters.is_empty() {
                            drop(pending);
                            let _ = events_tx.send(GdbEvent::Stream(kind, text));
                        }
                    }
                }
            }
            let waiters = std::mem::take(&mut lock(&p).waiters);
            for (_, w) in waiters {
                let _ = w.send(Err(GdbError::Exited));
            }
            let _ = events_tx.send(GdbEvent::Exited);
        });
        Ok(Gdb {
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_token: Mutex::new(1),
            child: Mutex::new(child),
        })
    }

    /// Sends one MI command (e.g. `-exec-continue`) and waits for its result record.
    pub async fn cmd(&self, command: &str) -> Result<MiOutput, GdbError> {
        let (tx, rx) = oneshot::channel();
        let token = {
            let mut next = lock(&self.next_token);
            let t = *next;
            *next += 1;
            t
        };
        lock(&self.pending).waiters.insert(token, tx);
        tracing::trace!("gdb< {token}{command}");
        {
            let mut stdin = self.stdin.lock().await;
            let line = format!("{token}{command}\n");
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                lock(&self.pending).waiters.remove(&token);
                return Err(GdbError::Exited);
            }
        }
        rx.await.unwrap_or(Err(GdbError::Exited))
    }

    /// Runs a CLI command (`monitor partitions`, `info registers`) and returns what it printed.
    pub async fn console(&self, command: &str) -> Result<String, GdbError> {
        let out = self
            .cmd(&format!("-interpreter-exec console {}", mi::quote(command)))
            .await?;
        Ok(out.stream)
    }

    /// Kills gdb if it is still running.
    pub fn kill(&self) {
        let _ = lock(&self.child).start_kill();
    }
}
