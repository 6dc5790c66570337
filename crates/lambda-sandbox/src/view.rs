//! The filesystem a sandboxed process sees: a read-only tmpfs root holding
//! read-only binds of what the program needs (the interpreter and its
//! libraries), minimal device nodes, a private /proc and a small private /tmp.
//! Everything is resolved in the parent (paths, source fds, mount flags) so
//! that the child only runs syscalls on prepared data.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a sandboxed program may see of the host filesystem. Paths not listed
/// do not exist inside (no /etc/shadow, no data dir, no /home).
#[derive(Debug, Clone, Default)]
pub struct FsView {
    /// Host paths visible read-only at the same place. A top-level symlink
    /// (`/lib -> usr/lib`) is recreated as a symlink; a missing path is skipped.
    pub read_only: Vec<PathBuf>,
    /// Host paths visible read-only at another place: `(host, inside)`.
    pub read_only_at: Vec<(PathBuf, PathBuf)>,
    /// Host directories visible read-write at another place: `(host, inside)`
    /// (a compiler's project and target dirs). Never give a worker one.
    pub read_write_at: Vec<(PathBuf, PathBuf)>,
    /// Size of the private, writable `/tmp`.
    pub tmp_bytes: u64,
    /// Working directory inside (e.g. a `read_write_at` target); default `/tmp`.
    /// (`Command::current_dir` runs before the sandbox exists: use this instead.)
    pub workdir: Option<PathBuf>,
}

/// The system paths every dynamically linked program needs.
const SYSTEM: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache", "/etc/localtime"];

/// Device nodes bound from the host (they cannot be created in a user namespace).
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

impl FsView {
    /// The system paths plus the installation prefix of `program` (e.g.
    /// `/root/.pyenv/versions/3.11.7` for its `bin/python3`) when it lives outside them.
    pub fn for_program(program: &Path, tmp_bytes: u64) -> Self {
        let mut read_only: Vec<PathBuf> = SYSTEM.iter().map(PathBuf::from).collect();
        if let Ok(real) = program.canonicalize()
            && let Some(prefix) = real.parent().and_then(Path::parent)
            && prefix != Path::new("/")
            && !SYSTEM.iter().any(|s| prefix.starts_with(s))
        {
            read_only.push(prefix.to_owned());
        }
        Self { read_only, tmp_bytes, ..Self::default() }
    }
}

/// One bind mount. The child opens `host` before it changes identity (as the
/// controller's user, inside the new mount namespace: a mount of another
/// namespace cannot be bound) and binds it through `/proc/self/fd/N`.
#[derive(Debug)]
pub(crate) struct Bind {
    pub host: CString,
    pub target: CString,
    /// Flags of the read-only remount; `None` keeps the bind as it is (devices, rw dirs).
    pub remount: Option<libc::c_ulong>,
}

/// Most binds one view may hold (the child keeps their fds in a fixed array).
pub(crate) const MAX_BINDS: usize = 64;

/// A filesystem view resolved for the child.
#[derive(Debug)]
pub struct PreparedView {
    /// Where the new root is mounted before pivot_root (world-traversable, always present).
    pub(crate) base: CString,
    pub(crate) root_opts: CString,
    pub(crate) dirs: Vec<CString>,
    pub(crate) files: Vec<CString>,
    pub(crate) symlinks: Vec<(CString, CString)>,
    pub(crate) binds: Vec<Bind>,
    pub(crate) proc_dir: CString,
    pub(crate) tmp_dir: CString,
    pub(crate) tmp_opts: CString,
    pub(crate) workdir: CString,
    /// Landlock rules, paths as seen inside.
    pub(crate) landlock: Vec<Rule>,
}

/// A landlock rule: what may be done beneath `path` (a directory) or to it (a file).
#[derive(Debug)]
pub(crate) struct Rule {
    pub path: CString,
    pub access: Access,
    pub dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadExec,
    ReadWrite,
    Device,
    Proc,
    /// Listing directories only (the root: everything in the view is visible anyway).
    List,
}

const BASE: &str = "/tmp";

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::other("path contains a NUL byte"))
}

fn inside(path: &Path) -> io::Result<CString> {
    let mut full = BASE.as_bytes().to_vec();
    full.extend_from_slice(path.as_os_str().as_bytes());
    cstring(&full)
}

/// Mount flags of the mount holding `path` that a remount inside a user
/// namespace must keep (the kernel locks them), plus ro/nosuid/nodev.
fn locked_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let c = cstring(path.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let f = unsafe { st.assume_init() }.f_flag;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn normal(path: &Path) -> io::Result<PathBuf> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(io::Error::other(format!("sandbox path {} must be absolute and plain", path.display())));
    }
    Ok(path.components().collect())
}

impl PreparedView {
    pub(crate) fn prepare(view: &FsView) -> io::Result<Self> {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut files = Vec::new();
        let mut symlinks = Vec::new();
        let mut binds = Vec::new();
        let mut landlock = Vec::new();
        let mut bound: Vec<PathBuf> = Vec::new();
        let mut add = |host: &Path, at: &Path, access: Access| -> io::Result<()> {
            let at = normal(at)?;
            if bound.iter().any(|b| at.starts_with(b)) {
                return Ok(()); // already visible through a bind of an ancestor
            }
            let meta = match std::fs::symlink_metadata(host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for a in at.ancestors().skip(1).filter(|a| *a != Path::new("/")) {
                dirs.insert(a.to_owned());
            }
            if meta.file_type().is_symlink() && host == at && at.parent() == Some(Path::new("/")) {
                let target = std::fs::read_link(host)?;
                symlinks.push((cstring(target.as_os_str().as_bytes())?, inside(&at)?));
                return Ok(());
            }
            let is_dir = std::fs::metadata(host)?.is_dir();
            if is_dir {
                dirs.insert(at.clone());
            } else {
                files.push(inside(&at)?);
            }
            let remount = match access {
                Access::ReadExec => Some(locked_flags(host)?),
                _ => None,
            };
            binds.push(Bind { host: cstring(host.as_os_str().as_bytes())?, target: inside(&at)?, remount });
            if access != Access::Device {
                landlock.push(Rule { path: cstring(at.as_os_str().as_bytes())?, access, dir: is_dir });
            }
            bound.push(at);
            Ok(())
        };
        let mut ro: Vec<&PathBuf> = view.read_only.iter().collect();
        ro.sort_by_key(|p| p.components().count());
        for p in ro {
            add(p, p, Access::ReadExec)?;
        }
        for (host, at) in &view.read_only_at {
            add(host, at, Access::ReadExec)?;
        }
        for (host, at) in &view.read_write_at {
            add(host, at, Access::ReadWrite)?;
        }
        for dev in DEVICES {
            add(Path::new(dev), Path::new(dev), Access::Device)?;
        }
        for d in ["/dev", "/proc", "/tmp"] {
            dirs.insert(PathBuf::from(d));
        }
        symlinks.push((cstring(b"/proc/self/fd")?, inside(Path::new("/dev/fd"))?));
        for (path, access) in [
            ("/", Access::List),
            ("/dev", Access::Device),
            ("/proc", Access::Proc),
            ("/tmp", Access::ReadWrite),
        ] {
            landlock.push(Rule { path: cstring(path.as_bytes())?, access, dir: true });
        }
        if binds.len() > MAX_BINDS {
            return Err(io::Error::other(format!("a sandbox view holds at most {MAX_BINDS} binds")));
        }
        // BTreeSet order puts every parent before its children.
        let dirs = dirs.iter().map(|d| inside(d)).collect::<io::Result<Vec<_>>>()?;
        let tmp_kib = (view.tmp_bytes / 1024).max(64);
        Ok(Self {
            base: cstring(BASE.as_bytes())?,
            root_opts: cstring(b"size=4m,nr_inodes=4096,mode=0755")?,
            dirs,
            files,
            symlinks,
            binds,
            proc_dir: inside(Path::new("/proc"))?,
            tmp_dir: inside(Path::new("/tmp"))?,
            tmp_opts: cstring(format!("size={tmp_kib}k,nr_inodes=16384,mode=1777").as_bytes())?,
            workdir: match &view.workdir {
                Some(dir) => cstring(normal(dir)?.as_os_str().as_bytes())?,
                None => cstring(b"/tmp")?,
            },
            landlock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_lists_mountpoints_parents_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = dir.path().join("hosts");
        std::fs::create_dir(&host).expect("mkdir");
        let view = FsView {
            read_only: vec!["/usr".into(), "/usr/bin".into(), "/lib".into(), "/nonexistent".into()],
            read_only_at: vec![(host, "/lambda/hosts".into())],
            tmp_bytes: 1 << 20,
            ..FsView::default()
        };
        let p = PreparedView::prepare(&view).expect("prepare");
        let dirs: Vec<&str> = p.dirs.iter().map(|d| d.to_str().expect("utf8")).collect();
        assert!(dirs.contains(&"/tmp/usr") && dirs.contains(&"/tmp/lambda/hosts"), "{dirs:?}");
        let parent = dirs.iter().position(|d| *d == "/tmp/lambda").expect("parent");
        assert!(parent < dirs.iter().position(|d| *d == "/tmp/lambda/hosts").expect("child"));
        // /usr/bin is inside /usr's bind; /nonexistent is skipped.
        assert!(p.binds.iter().all(|b| b.target.to_str() != Ok("/tmp/usr/bin")));
        assert!(p.binds.iter().any(|b| b.target.to_str() == Ok("/tmp/dev/null") && b.remount.is_none()));
        assert!(p.files.iter().any(|f| f.to_str() == Ok("/tmp/dev/null")));
        assert_eq!(p.tmp_opts.to_str(), Ok("size=1024k,nr_inodes=16384,mode=1777"));
    }
}
