//! The child side of a sandboxed spawn, run from `CommandExt::pre_exec`.
//!
//! Three processes per sandbox:
//! - **outer**: the child `std::process::Command` forks (tokio supervises it).
//!   It joins the cgroup, clones `init` into new namespaces, writes init's
//!   uid/gid maps from the parent user namespace, then waits and exits with
//!   init's status. It holds no fds, so EOF on the pipes means the sandbox died.
//! - **init**: PID 1 of the new PID namespace. It builds the filesystem view
//!   (bind mounts, /proc, /tmp, pivot_root), forks the worker, reaps orphans,
//!   and exits with the worker's status — which kills everything left in the
//!   namespace. Signals from inside the namespace cannot kill it.
//! - **worker**: drops capabilities, sets rlimits, `no_new_privs`, landlock and
//!   seccomp, and returns from `pre_exec`, so std execs the program.
//!
//! Everything here runs between fork and exec of a multi-threaded process:
//! only raw syscalls on data prepared by the parent, no allocation, no locks.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;
use std::sync::Arc;

use seccompiler::BpfProgram;

use crate::view::{Access, MAX_BINDS, PreparedView};

/// The parts of a launch shared by every sandbox of one [`crate::Sandbox`].
#[derive(Debug)]
pub(crate) struct Common {
    pub ns_flags: libc::c_int,
    /// `/proc/<pid>/{uid_map,gid_map}` contents; `None` without a user namespace.
    pub maps: Option<(Vec<u8>, Vec<u8>)>,
    pub hostname: CString,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub no_new_privs: bool,
    pub seccomp: Vec<BpfProgram>,
    /// Landlock ABI to use (0 = none).
    pub landlock_abi: u32,
    /// Drop every capability before exec (only meaningful in a user namespace).
    pub drop_caps: bool,
}

/// One launch: the shared parts, the filesystem view (with a mount
/// namespace) and the cgroup files to join.
#[derive(Debug)]
pub(crate) struct Launch {
    pub common: Arc<Common>,
    pub view: Option<Arc<PreparedView>>,
    pub procs: Vec<CString>,
}

/// Makes `cmd` start its program inside the sandbox described by `launch`.
pub(crate) fn install(cmd: &mut Command, launch: Launch) {
    // One process group for outer, init and worker: killing it from outside
    // kills init, and with it the whole PID namespace.
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // raw syscalls on memory owned by `launch` (moved into the closure and
    // never mutated), never allocates or takes locks, and the processes it
    // forks either return into std's exec path or end with `_exit`.
    unsafe {
        cmd.pre_exec(move || outer(&launch));
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes `lambda-sandbox: <what>: errno <n>` to stderr without allocating.
fn report(what: &str, err: i32) {
    let mut buf = [0u8; 160];
    let mut len = 0;
    for part in [b"lambda-sandbox: ".as_slice(), what.as_bytes(), b": errno "] {
        let n = part.len().min(buf.len() - len - 12);
        buf[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    len += itoa(err.max(0) as u64, &mut buf[len..]);
    buf[len] = b'\n';
    // SAFETY: writes `len + 1` initialised bytes from a live stack buffer.
    unsafe { libc::write(2, buf.as_ptr().cast(), len + 1) };
}

/// Decimal digits of `n` into `out`; returns how many.
fn itoa(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let count = digits.len() - i;
    out[..count].copy_from_slice(&digits[i..]);
    count
}

/// Ends a forked process that must not return into std (init, a failed setup).
fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or
    // touching the parent's (copied) locks.
    unsafe { libc::_exit(code) }
}

fn check(rc: libc::c_long, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = errno();
        report(what, e);
        return Err(io::Error::from_raw_os_error(e));
    }
    Ok(())
}

fn write_file(path: &CStr, data: &[u8]) -> libc::c_long {
    // SAFETY: `path` is NUL-terminated; `data` is a live slice; the fd is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n == data.len() as isize { 0 } else { -1 }
    }
}

/// Runs in the process std forked. Returns only in the worker (to exec).
fn outer(l: &Launch) -> io::Result<()> {
    for procs in &l.procs {
        check(write_file(procs, b"0"), "joining the cgroup")?;
    }
    // SAFETY: plain syscalls with valid arguments. Resetting every handler to
    // the default drops the controller's handlers (whose state is not ours);
    // dropping supplementary groups works only as root and is harmless otherwise.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::setgroups(0, ptr::null());
    }
    let mut sync = [0 as libc::c_int; 2];
    // SAFETY: `sync` has room for the two fds pipe2 writes.
    check(unsafe { libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long, "pipe")?;
    let flags = l.common.ns_flags | libc::SIGCHLD;
    // SAFETY: clone without CLONE_VM and with a null stack behaves like fork:
    // the child gets a copy of this (single-threaded) process.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0, 0, 0, 0) };
    check(pid, "clone into new namespaces")?;
    if pid == 0 {
        return init(l, sync[0], sync[1]);
    }
    let pid = pid as libc::pid_t;
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(sync[0]) };
    if let Some((uid_map, gid_map)) = &l.common.maps
        && let Err(e) = write_maps(pid, uid_map, gid_map)
    {
        // SAFETY: kill our own child; it waits on the pipe and never ran user code.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(e);
    }
    // SAFETY: a one-byte write to our pipe, then closing every fd: the error
    // pipe std watches and our copies of stdio must not outlive the sandbox.
    unsafe {
        libc::write(sync[1], b"1".as_ptr().cast(), 1);
        libc::close(sync[1]);
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    }
    exit(wait_for(pid))
}

/// Waits for `pid`, reaping any other child meanwhile; returns its exit code
/// (128 + signal when killed).
fn wait_for(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            return 128 + libc::WTERMSIG(status);
        }
        if r < 0 && errno() != libc::EINTR {
            return 125;
        }
    }
}

/// `/proc/<pid>/<name>` into `buf`, NUL-terminated.
fn proc_path<'a>(pid: libc::pid_t, name: &[u8], buf: &'a mut [u8; 64]) -> &'a CStr {
    let mut len = 0;
    buf[..6].copy_from_slice(b"/proc/");
    len += 6;
    len += itoa(pid as u64, &mut buf[len..]);
    buf[len] = b'/';
    len += 1;
    buf[len..len + name.len()].copy_from_slice(name);
    len += name.len();
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).unwrap_or(c"/nonexistent")
}

/// `/proc/self/fd/<fd>` into `buf`, NUL-terminated.
fn fd_path(fd: libc::c_int, buf: &mut [u8; 64]) -> &CStr {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let len = prefix.len() + itoa(fd.max(0) as u64, &mut buf[prefix.len()..]);
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).unwrap_or(c"/nonexistent")
}

fn write_maps(pid: libc::pid_t, uid_map: &[u8], gid_map: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 64];
    // "deny" is required before an unprivileged gid_map; as root it also keeps
    // the sandbox from ever calling setgroups.
    write_file(proc_path(pid, b"setgroups", &mut buf), b"deny");
    check(write_file(proc_path(pid, b"uid_map", &mut buf), uid_map), "writing uid_map")?;
    check(write_file(proc_path(pid, b"gid_map", &mut buf), gid_map), "writing gid_map")
}

/// Reports a failed setup step and ends init (the worker never starts).
fn fatal(what: &str) -> ! {
    report(what, errno());
    exit(126)
}

/// PID 1 of the sandbox. Returns only in the forked worker.
fn init(l: &Launch, sync_read: libc::c_int, sync_write: libc::c_int) -> io::Result<()> {
    let mut byte = 0u8;
    // SAFETY: plain syscalls; `byte` is a valid one-byte buffer. Dying with
    // outer (PDEATHSIG) takes the namespace down with it.
    let got = unsafe {
        libc::close(sync_write);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let n = libc::read(sync_read, (&raw mut byte).cast(), 1);
        libc::close(sync_read);
        n
    };
    if got != 1 {
        exit(125); // outer failed to map our ids, or died
    }
    // Bind sources are opened before the identity changes: the host user may
    // reach paths (under /root, a 0700 data dir) the sandbox user may not.
    let mut sources = [-1 as libc::c_int; MAX_BINDS];
    if let Some(view) = &l.view {
        for (fd, bind) in sources.iter_mut().zip(&view.binds) {
            // SAFETY: NUL-terminated path prepared by the parent.
            *fd = unsafe { libc::open(bind.host.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if *fd < 0 {
                fatal("opening a bind source");
            }
        }
    }
    if l.common.maps.is_some() {
        // SAFETY: become uid/gid 0 of the new user namespace (host: the mapped
        // unprivileged ids); stay dumpable so /proc/self/fd stays readable to us.
        unsafe {
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                fatal("setresuid in the user namespace");
            }
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
        }
    }
    if let Some(view) = &l.view {
        build_root(view, &sources);
    }
    if l.common.ns_flags & libc::CLONE_NEWUTS != 0 {
        let name = l.common.hostname.as_bytes();
        // SAFETY: a valid buffer of `name.len()` bytes.
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: a plain fork of this single-threaded process, as above.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid < 0 {
        fatal("fork of the worker");
    }
    if pid == 0 {
        return worker(l, me);
    }
    // SAFETY: init keeps no fds: the worker's pipes close when the worker dies.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    exit(wait_for(pid as libc::pid_t))
}

fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> bool {
    let p = |s: Option<&CStr>| s.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: all pointers are NUL-terminated strings or null, as mount(2) allows.
    unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) == 0 }
}

/// Builds the new root on a tmpfs at `view.base`, then pivots into it.
fn build_root(v: &PreparedView, sources: &[libc::c_int; MAX_BINDS]) {
    if !mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None) {
        fatal("making mounts private");
    }
    if !mount(Some(c"tmpfs"), &v.base, Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(&v.root_opts)) {
        fatal("mounting the root tmpfs");
    }
    // SAFETY: NUL-terminated paths prepared by the parent; fds are closed at once.
    unsafe {
        for dir in &v.dirs {
            if libc::mkdir(dir.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                fatal("creating a mount point");
            }
        }
        for file in &v.files {
            let fd = libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
            if fd < 0 {
                fatal("creating a file mount point");
            }
            libc::close(fd);
        }
        for (target, link) in &v.symlinks {
            if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 {
                fatal("creating a symlink");
            }
        }
    }
    for (b, &fd) in v.binds.iter().zip(sources) {
        let mut buf = [0u8; 64];
        if !mount(Some(fd_path(fd, &mut buf)), &b.target, None, libc::MS_BIND | libc::MS_REC, None) {
            fatal("bind mount");
        }
        // SAFETY: our own fd, not used again.
        unsafe { libc::close(fd) };
        if let Some(flags) = b.remount
            && !mount(None, &b.target, None, flags, None)
        {
            fatal("read-only remount of a bind mount");
        }
    }
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if !mount(Some(c"proc"), &v.proc_dir, Some(c"proc"), hardened, None) {
        fatal("mounting /proc");
    }
    if !mount(Some(c"tmpfs"), &v.tmp_dir, Some(c"tmpfs"), hardened, Some(&v.tmp_opts)) {
        fatal("mounting /tmp");
    }
    // SAFETY: NUL-terminated paths; pivot_root(".", ".") stacks the old root
    // on the new one, and the detach unmounts it from this namespace.
    unsafe {
        if libc::chdir(v.base.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
        {
            fatal("pivot_root");
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            fatal("detaching the old root");
        }
    }
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if !mount(None, c"/", None, ro, None) {
        fatal("read-only remount of the root");
    }
}

/// The process that execs the program: last restrictions, then back to std.
fn worker(l: &Launch, init_pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != init_pid {
            exit(125); // init died already
        }
        if let Some(v) = &l.view {
            check(libc::chdir(v.workdir.as_ptr()) as libc::c_long, "chdir to the sandbox workdir")?;
        }
        if l.common.drop_caps {
            // Empty bounding and ambient sets: exec cannot grant capabilities,
            // even to uid 0 of the namespace.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap) != 0 && errno() == libc::EINVAL {
                    break;
                }
            }
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        }
        for &(resource, value) in &l.common.rlimits {
            let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
            check(libc::setrlimit(resource, &lim) as libc::c_long, "setrlimit")?;
        }
        if l.common.no_new_privs {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long, "no_new_privs")?;
        }
    }
    if l.common.landlock_abi > 0
        && let Some(v) = &l.view
    {
        landlock(v, l.common.landlock_abi)?;
    }
    for filter in &l.common.seccomp {
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut().cast() };
        // SAFETY: `prog` points to a live filter; the kernel copies it.
        let rc =
            unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &raw const prog) };
        check(rc, "seccomp")?;
    }
    if l.common.drop_caps {
        let mut header = CapHeader { version: 0x2008_0522, pid: 0 };
        let data = [CapData::default(); 2];
        // SAFETY: capset with a v3 header and two zeroed data structs clears every set.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
        check(rc, "dropping capabilities")?;
    }
    // SAFETY: marks every inherited fd above stdio close-on-exec (std's own
    // error pipe already is), so nothing of the controller reaches the program.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

// Landlock UAPI (linux/landlock.h).
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const FS_EXECUTE: u64 = 1;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
const NET_BIND_TCP: u64 = 1;
const NET_CONNECT_TCP: u64 = 2;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// Every filesystem right known to landlock ABI `abi`.
pub(crate) fn landlock_fs_rights(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// Restricts the filesystem to the view's paths, denies TCP bind/connect
/// (ABI ≥ 4) and signals or abstract sockets leaving the sandbox (ABI ≥ 6).
fn landlock(v: &PreparedView, abi: u32) -> io::Result<()> {
    let handled = landlock_fs_rights(abi);
    let attr = RulesetAttr {
        handled_access_fs: handled,
        handled_access_net: if abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 },
        scoped: if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 },
    };
    let size: usize = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    // SAFETY: `attr` is a live struct at least `size` bytes long.
    let ruleset = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &raw const attr, size, 0) };
    check(ruleset, "landlock_create_ruleset")?;
    let ruleset = ruleset as libc::c_int;
    let read = FS_READ_FILE | FS_READ_DIR;
    let file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
    for rule in &v.landlock {
        let mut access = match rule.access {
            Access::ReadExec => read | FS_EXECUTE,
            Access::Proc => read,
            Access::List => FS_READ_DIR,
            Access::Device => read | FS_WRITE_FILE | FS_IOCTL_DEV,
            Access::ReadWrite => handled & !FS_IOCTL_DEV,
        };
        if !rule.dir {
            access &= file_rights;
        }
        // SAFETY: NUL-terminated path; the fd is closed right after use.
        unsafe {
            let fd = libc::open(rule.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                continue;
            }
            let beneath = PathBeneath { allowed_access: access & handled, parent_fd: fd };
            let rc = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &raw const beneath,
                0,
            );
            libc::close(fd);
            if rc != 0 {
                let e = errno();
                report("landlock_add_rule", e);
                libc::close(ruleset);
                return Err(io::Error::from_raw_os_error(e));
            }
        }
    }
    // SAFETY: applies the ruleset to this (single-threaded) process.
    let rc = unsafe {
        let rc = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0);
        libc::close(ruleset);
        rc
    };
    check(rc, "landlock_restrict_self")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_proc_paths() {
        let mut out = [0u8; 20];
        let n = itoa(0, &mut out);
        assert_eq!(&out[..n], b"0");
        let n = itoa(4_294_967_296, &mut out);
        assert_eq!(&out[..n], b"4294967296");
        let mut buf = [0u8; 64];
        assert_eq!(proc_path(123, b"uid_map", &mut buf), c"/proc/123/uid_map");
    }

    #[test]
    fn landlock_rights_grow_with_the_abi() {
        assert_eq!(landlock_fs_rights(0), 0);
        assert!(landlock_fs_rights(1) < landlock_fs_rights(3));
        assert_eq!(landlock_fs_rights(7), (1 << 16) - 1);
    }
}
