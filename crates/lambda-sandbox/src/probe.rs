//! Startup probes: which isolation mechanisms this kernel and this user
//! actually allow. Each probe runs in a short-lived forked child, so a probe
//! that works changes nothing in the controller.

use serde::Serialize;

use crate::launch::landlock_fs_rights;

/// What the probes found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SandboxCapabilities {
    /// The controller runs as root (uid 0 of the initial user namespace).
    pub root: bool,
    pub user_namespace: bool,
    pub pid_namespace: bool,
    pub mount_namespace: bool,
    pub network_namespace: bool,
    pub ipc_namespace: bool,
    pub uts_namespace: bool,
    pub cgroup_namespace: bool,
    /// A tmpfs root and pivot_root inside a user + mount namespace.
    pub pivot_root: bool,
    pub no_new_privs: bool,
    pub seccomp: bool,
    /// Landlock ABI version, 0 when unavailable.
    pub landlock_abi: u32,
}

/// Runs `probe` in a forked child; true when it returned true.
fn in_child(probe: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only makes raw syscalls (inside `probe`) and `_exit`s;
    // it never returns into Rust code that could touch locks held by other threads.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return false;
        }
        if pid == 0 {
            libc::_exit(if probe() { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

fn unshare(flags: libc::c_int) -> bool {
    // SAFETY: unshare has no memory preconditions; it only affects the (forked) caller.
    unsafe { libc::unshare(flags) == 0 }
}

fn pivot_root_works() -> bool {
    // SAFETY: runs in a throwaway child inside its own user + mount namespace;
    // all strings are NUL-terminated literals.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let null = std::ptr::null();
        libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=64k".as_ptr().cast(),
            ) == 0
            && libc::chdir(c"/tmp".as_ptr()) == 0
            && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
            && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
    }
}

fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute pointer.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).ok().filter(|&v| landlock_fs_rights(v) > 0).unwrap_or(0)
}

fn seccomp_works(filters: &[seccompiler::BpfProgram]) -> bool {
    if filters.is_empty() {
        return false;
    }
    in_child(|| {
        // SAFETY: installs the prebuilt filters in a throwaway child.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return false;
            }
            filters.iter().all(|f| {
                let prog = libc::sock_fprog { len: f.len() as u16, filter: f.as_ptr().cast_mut().cast() };
                libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &raw const prog) == 0
            }) && libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) != 0
        }
    })
}

impl SandboxCapabilities {
    /// Probes every mechanism (a few ms: one fork per probe).
    pub fn probe() -> Self {
        Self::probe_with(&crate::seccomp::filters().unwrap_or_default())
    }

    pub(crate) fn probe_with(filters: &[seccompiler::BpfProgram]) -> Self {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let user = in_child(|| unshare(libc::CLONE_NEWUSER));
        let with_user = |flag| user && in_child(|| unshare(libc::CLONE_NEWUSER | flag));
        Self {
            root,
            user_namespace: user,
            pid_namespace: with_user(libc::CLONE_NEWPID),
            mount_namespace: with_user(libc::CLONE_NEWNS),
            network_namespace: with_user(libc::CLONE_NEWNET),
            ipc_namespace: with_user(libc::CLONE_NEWIPC),
            uts_namespace: with_user(libc::CLONE_NEWUTS),
            cgroup_namespace: with_user(libc::CLONE_NEWCGROUP),
            pivot_root: user && in_child(pivot_root_works),
            // SAFETY: prctl in a throwaway child.
            no_new_privs: in_child(|| unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 }),
            seccomp: seccomp_works(filters),
            landlock_abi: landlock_abi(),
        }
    }
}
