//! The running node's backup socket: a Unix socket at `<data dir>/backup.sock` (mode 0600)
//! on which the node streams the export of its own store ([`super::export`]).
//!
//! sled lets one process open a store, so `cunyun-node backup` cannot read a running node's
//! store itself; it asks the node here. Access is the file system's: only the node's user (and
//! root) can open the socket, the same people who could read the data directory. The socket is
//! local only; nothing is exposed on the network. Protocol: the client writes
//! [`REQUEST`]; the node answers with `D` records and the end record, then closes.

use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Weak;

use crate::state::AppState;

/// File name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "backup.sock";
/// What a client sends to ask for the export.
pub const REQUEST: &[u8] = b"export v1\n";

/// The socket path of the data directory `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Serves the backup socket of `data_dir` until `stopped` completes, then removes it. The
/// state is held weakly (taken per connection), so the socket never keeps a stopped node's
/// store open. A failure to bind is logged and the node runs without it: a backup then needs
/// the node stopped.
pub fn spawn(
    state: Weak<AppState>,
    data_dir: &Path,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let path = socket_path(data_dir);
    // Only one process can hold the store of a data dir, so a socket file here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = match bind_private(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "backup socket not available; `cunyun-node backup` will need the node stopped");
            return;
        }
    };
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Some(state) = state.upgrade() else { break };
                        let store = state.records.store().clone();
                        drop(state);
                        tokio::task::spawn_blocking(move || serve_one(stream, store));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backup socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    });
}

fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn serve_one(stream: tokio::net::UnixStream, store: cunyun_platform::store::DocStore) {
    let result = (|| -> Result<_, super::export::ExportError> {
        let mut stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut req = vec![0u8; REQUEST.len()];
        stream.read_exact(&mut req)?;
        if req != REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unknown backup socket request",
            )
            .into());
        }
        let started = std::time::Instant::now();
        let end = super::export::export_docs(&store, &mut BufWriter::new(&stream))?;
        Ok((end, started.elapsed()))
    })();
    match result {
        Ok((end, took)) => tracing::info!(
            target: "cunyun::_events::backup_exported",
            docs = end.docs,
            damaged = end.damaged.len(),
            ms = took.as_millis() as u64,
            "store exported for a backup"
        ),
        Err(e) => tracing::warn!(error = %e, "backup export over the socket failed"),
    }
}
