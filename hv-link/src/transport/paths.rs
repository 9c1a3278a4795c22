//! Where link sockets and token files live, and how to find the systems running on this machine.
//!
//! Runtime directory: `$XDG_RUNTIME_DIR/hvdk/` when `XDG_RUNTIME_DIR` is set (absolute), else
//! `/tmp/hvdk-<uid>/`; created mode 0700 and refused if another user owns it.
//! A system `<name>` serves on `<runtime dir>/<name>.sock`; a TCP listener on port `<port>`
//! stores its token in `<runtime dir>/tcp-<port>.token` (mode 0600).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{LinkAddr, TransportError, io_err};

/// Name of the per-user subdirectory of `$XDG_RUNTIME_DIR`.
pub const RUNTIME_SUBDIR: &str = "hvdk";
/// File extension of link sockets in the runtime directory.
pub const SOCKET_EXT: &str = "sock";

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The per-user runtime directory (not created by this call).
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join(RUNTIME_SUBDIR),
        _ => PathBuf::from(format!("/tmp/hvdk-{}", uid())),
    }
}

/// Check a system name usable in a socket file name: 1-64 of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-`.
pub fn validate_system_name(name: &str) -> Result<(), TransportError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TransportError::BadSystemName {
            name: name.to_owned(),
        })
    }
}

/// `<runtime dir>/<system>.sock`: where a system's link socket lives by default.
pub fn default_link_path(system: &str) -> Result<PathBuf, TransportError> {
    validate_system_name(system)?;
    Ok(runtime_dir().join(format!("{system}.{SOCKET_EXT}")))
}

/// `unix:<default_link_path(system)>`.
pub fn default_link_addr(system: &str) -> Result<LinkAddr, TransportError> {
    default_link_path(system).map(LinkAddr::Unix)
}

/// `<runtime dir>/tcp-<port>.token`: where a TCP listener on `port` stores its token.
pub fn default_token_path(port: u16) -> PathBuf {
    runtime_dir().join(format!("tcp-{port}.token"))
}

/// Create `dir` (mode 0700) if missing; refuse it if it is not a directory we own; tighten
/// its mode to 0700 if group or others have access.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TransportError> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(io_err(format!("create {}", dir.display()), e)),
    }
    let insecure = |reason: &str| TransportError::InsecureDirectory {
        path: dir.to_owned(),
        reason: reason.to_owned(),
    };
    let md = fs::symlink_metadata(dir).map_err(|e| io_err(format!("stat {}", dir.display()), e))?;
    if !md.is_dir() {
        return Err(insecure("not a directory"));
    }
    if md.uid() != uid() {
        return Err(insecure("owned by another user"));
    }
    if md.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}

/// 32 random bytes from `/dev/urandom`, hex-encoded (64 characters).
pub fn generate_token() -> Result<String, TransportError> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| io_err("read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write `token` to `path` as a new mode-0600 file (replacing an old one).
pub fn write_token_file(path: &Path, token: &str) -> Result<(), TransportError> {
    if let Some(parent) = path.parent()
        && (parent == runtime_dir() || !parent.exists())
    {
        ensure_private_dir(parent)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("remove {}", path.display()), e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(format!("create {}", path.display()), e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| io_err(format!("write {}", path.display()), e))?;
    Ok(())
}

/// Read a token file written by [`write_token_file`].
pub fn read_token_file(path: &Path) -> Result<String, TransportError> {
    let s = fs::read_to_string(path)
        .map_err(|e| io_err(format!("read token file {}", path.display()), e))?;
    Ok(s.trim().to_owned())
}

/// A link socket found in a runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSystem {
    /// System name (the socket's file stem).
    pub name: String,
    /// Its address (`unix:<path>`).
    pub addr: LinkAddr,
    /// True if something accepted a connection on it; false for a stale socket file.
    pub alive: bool,
}

/// Link sockets in the default runtime directory (see [`list_systems_in`]).
pub fn list_systems() -> Result<Vec<RunningSystem>, TransportError> {
    list_systems_in(&runtime_dir())
}

/// Every `*.sock` socket in `dir`, sorted by name, each probed with a connect (a live server
/// sees a connection that closes before its hello). A missing `dir` gives an empty list.
pub fn list_systems_in(dir: &Path) -> Result<Vec<RunningSystem>, TransportError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("list {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != SOCKET_EXT) {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let alive = UnixStream::connect(&path).is_ok();
        out.push(RunningSystem {
            name,
            addr: LinkAddr::Unix(path),
            alive,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Find a running system in the default runtime directory (see [`find_system_in`]).
pub fn find_system(name: Option<&str>) -> Result<LinkAddr, TransportError> {
    find_system_in(&runtime_dir(), name)
}

/// The address of the live system called `name`, or of the only live system when `name` is
/// `None`. Errors name what was found when there is none or more than one.
pub fn find_system_in(dir: &Path, name: Option<&str>) -> Result<LinkAddr, TransportError> {
    let live: Vec<RunningSystem> = list_systems_in(dir)?
        .into_iter()
        .filter(|s| s.alive)
        .collect();
    match name {
        Some(n) => {
            validate_system_name(n)?;
            live.into_iter()
                .find(|s| s.name == n)
                .map(|s| s.addr)
                .ok_or_else(|| TransportError::SystemNotRunning {
                    name: n.to_owned(),
                    dir: dir.to_owned(),
                })
        }
        None => {
            let mut live = live;
            match live.len() {
                0 => Err(TransportError::NoSystemRunning {
                    dir: dir.to_owned(),
                }),
                1 => Ok(live.remove(0).addr),
                _ => Err(TransportError::AmbiguousSystem {
                    names: live.into_iter().map(|s| s.name).collect(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_and_default_paths() {
        for ok in ["demo", "a", "my-system_2", "v1.2"] {
            validate_system_name(ok).unwrap();
            let p = default_link_path(ok).unwrap();
            assert_eq!(
                p.file_name().unwrap().to_str().unwrap(),
                format!("{ok}.sock")
            );
            assert_eq!(p.parent().unwrap(), runtime_dir());
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(default_link_path(bad).is_err(), "{bad:?}");
        }
        let rd = runtime_dir();
        assert!(rd.ends_with(RUNTIME_SUBDIR) || rd.to_string_lossy().starts_with("/tmp/hvdk-"));
        assert!(default_token_path(4567).ends_with("tcp-4567.token"));
    }

    #[test]
    fn private_dir_and_token_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = dir.join("f");
        fs::write(&file, "x").unwrap();
        assert!(matches!(
            ensure_private_dir(&file),
            Err(TransportError::InsecureDirectory { .. }) | Err(TransportError::Io { .. })
        ));

        let t1 = generate_token().unwrap();
        let t2 = generate_token().unwrap();
        assert_eq!(t1.len(), 64);
        assert!(t1.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t1, t2);
        let tf = dir.join("tcp-1.token");
        write_token_file(&tf, &t1).unwrap();
        write_token_file(&tf, &t2).unwrap();
        assert_eq!(fs::metadata(&tf).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_token_file(&tf).unwrap(), t2);
    }

    #[test]
    fn listing_and_finding_systems() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(list_systems_in(&dir.join("missing")).unwrap().is_empty());
        assert!(matches!(
            find_system_in(dir, None),
            Err(TransportError::NoSystemRunning { .. })
        ));
        let _a = std::os::unix::net::UnixListener::bind(dir.join("alpha.sock")).unwrap();
        // A stale socket: bound, then the listener dropped (file stays).
        drop(std::os::unix::net::UnixListener::bind(dir.join("stale.sock")).unwrap());
        fs::write(dir.join("notasocket.sock"), "").unwrap();
        let list = list_systems_in(dir).unwrap();
        let summary: Vec<_> = list.iter().map(|s| (s.name.as_str(), s.alive)).collect();
        assert_eq!(summary, [("alpha", true), ("stale", false)]);
        assert_eq!(
            find_system_in(dir, None).unwrap(),
            LinkAddr::Unix(dir.join("alpha.sock"))
        );
        assert!(find_system_in(dir, Some("alpha")).is_ok());
        assert!(matches!(
            find_system_in(dir, Some("stale")),
            Err(TransportError::SystemNotRunning { .. })
        ));
        let _b = std::os::unix::net::UnixListener::bind(dir.join("beta.sock")).unwrap();
        match find_system_in(dir, None) {
            Err(e @ TransportError::AmbiguousSystem { .. }) => {
                assert!(e.to_string().contains("alpha, beta"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
