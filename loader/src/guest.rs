//! The default guest: Debian's `linux-image-armmp` (armhf) kernel and the
//! busybox of `busybox-static:armhf`, fetched with apt (the one channel a
//! fresh Debian machine has) and kept in a user cache directory.
//!
//! Fetching: `dpkg --add-architecture armhf` if dpkg lacks it, `apt-get
//! download linux-image-armmp:armhf` (after `apt-get update` if that fails),
//! the `linux-image-*-armmp` package its `Depends` names, and
//! `busybox-static:armhf`; each unpacked with `dpkg-deb -x` in a temporary
//! directory inside the cache, and the two files moved into place with
//! `rename`, so that an interrupted fetch never leaves half a file. A lock
//! file serialises concurrent fetches.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::initramfs::{self, InitramfsError};

/// The variable that chooses the cache directory.
pub const CACHE_ENV: &str = "SPLITVISOR_CACHE";
/// The foreign architecture the packages are for.
pub const ARCH: &str = "armhf";
/// The kernel meta-package; it depends on the current kernel.
pub const KERNEL_META: &str = "linux-image-armmp";
/// The busybox package.
pub const BUSYBOX: &str = "busybox-static";
/// The default guest's kernel command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyAMA0";
/// The default guest's vCPUs.
pub const DEFAULT_SMP: u8 = 2;
/// The cache's subdirectory for these files.
const SUBDIR: &str = "debian-armhf";
/// The name of a fetch's work directory in the cache starts with this.
const WORK_PREFIX: &str = ".fetch-";
/// How many lines of a failed command's output an error keeps.
const TAIL_LINES: usize = 12;

/// Why the default guest is not there.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// No cache directory can be named.
    #[error("no cache directory: set {CACHE_ENV}, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// apt or dpkg is not installed.
    #[error(
        "the default guest is fetched with Debian's apt, and {0} is not installed here; \
         pass your own --kernel (and --initrd) instead"
    )]
    NoApt(String),
    /// Fetching needs root for these commands.
    #[error("the default guest is not cached, and fetching it needs these commands run as root first: {0}")]
    NeedsRoot(String),
    /// A command failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its status.
        status: std::process::ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A package is not what was expected.
    #[error("{0}")]
    Package(String),
    /// The initramfs could not be made.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GuestError + 'a {
    move |source| GuestError::Io { what, path: path.into(), source }
}

/// The cache directory and the files in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// The default guest's files, present in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultGuest {
    /// The kernel (a zImage).
    pub kernel: PathBuf,
    /// The static busybox (an armhf ELF).
    pub busybox: PathBuf,
}

impl Cache {
    /// `$SPLITVISOR_CACHE`, else `$XDG_CACHE_HOME/splitvisor`, else
    /// `$HOME/.cache/splitvisor`.
    pub fn locate() -> Result<Cache, GuestError> {
        Cache::from_vars(std::env::var_os(CACHE_ENV), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
    }

    /// [`locate`](Self::locate) with the variables given. Empty values
    /// count as unset, and a relative `XDG_CACHE_HOME` is ignored (the XDG
    /// base directory specification says so); a relative `SPLITVISOR_CACHE`
    /// is taken from the current directory.
    pub fn from_vars(
        splitvisor: Option<OsString>,
        xdg: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<Cache, GuestError> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = if let Some(dir) = set(splitvisor) {
            std::path::absolute(&dir).unwrap_or(dir)
        } else if let Some(xdg) = set(xdg).filter(|p| p.is_absolute()) {
            xdg.join("splitvisor")
        } else if let Some(home) = set(home) {
            home.join(".cache").join("splitvisor")
        } else {
            return Err(GuestError::NoCacheDir);
        };
        Ok(Cache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn files(&self) -> PathBuf {
        self.dir.join(SUBDIR)
    }

    /// Where the kernel is kept.
    pub fn kernel(&self) -> PathBuf {
        self.files().join("vmlinuz")
    }

    /// Where busybox is kept.
    pub fn busybox(&self) -> PathBuf {
        self.files().join("busybox")
    }

    /// Where the names and versions of the fetched packages are kept.
    pub fn manifest(&self) -> PathBuf {
        self.files().join("packages.txt")
    }

    /// The default guest, if both files are in the cache. Each is written
    /// by a rename, so a file that is there is whole.
    pub fn cached(&self) -> Option<DefaultGuest> {
        let guest = DefaultGuest { kernel: self.kernel(), busybox: self.busybox() };
        (guest.kernel.is_file() && guest.busybox.is_file()).then_some(guest)
    }

    /// The packages the cached files came from, if recorded.
    pub fn packages(&self) -> Option<String> {
        std::fs::read_to_string(self.manifest()).ok()
    }
}

/// The default guest: from the cache, or fetched into it first.
pub fn ensure(cache: &Cache) -> Result<DefaultGuest, GuestError> {
    match cache.cached() {
        Some(guest) => Ok(guest),
        None => fetch(cache, false),
    }
}

/// One progress line on standard error.
fn progress(step: &str) {
    eprintln!("splitvisor: guest: {step}");
}

/// Fetch the default guest into the cache (again, with `refresh`), one
/// progress line per step on standard error.
pub fn fetch(cache: &Cache, refresh: bool) -> Result<DefaultGuest, GuestError> {
    let files = cache.files();
    std::fs::create_dir_all(&files).map_err(io_error("cannot create", &files))?;
    let _lock = lock(&files.join(".lock"))?;
    if !refresh {
        // Another splitvisor may have fetched it while this one waited.
        if let Some(guest) = cache.cached() {
            return Ok(guest);
        }
    }
    remove_stale_work(&files);
    let root = rustix::process::geteuid().is_root();
    let mut apt = Apt::new(root);
    apt.check_tools()?;
    apt.ensure_arch()?;

    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&files)
        .map_err(io_error("cannot create a temporary directory in", &files))?;
    progress(&format!("downloading {KERNEL_META}:{ARCH} (apt-get download)"));
    let meta = apt.download(work.path(), &format!("{KERNEL_META}:{ARCH}"), KERNEL_META)?;
    let depends = dpkg_field(&meta, "Depends")?;
    let (kernel_pkg, kernel_version) = kernel_dependency(&depends).ok_or_else(|| {
        GuestError::Package(format!("{KERNEL_META} depends on no linux-image-*-armmp package (Depends: {depends})"))
    })?;
    let spec = match &kernel_version {
        Some(v) => format!("{kernel_pkg}:{ARCH}={v}"),
        None => format!("{kernel_pkg}:{ARCH}"),
    };
    progress(&format!("downloading {spec} (the kernel {KERNEL_META} depends on)"));
    let kernel_deb = apt.download(work.path(), &spec, &kernel_pkg)?;
    progress(&format!("downloading {BUSYBOX}:{ARCH}"));
    let busybox_deb = apt.download(work.path(), &format!("{BUSYBOX}:{ARCH}"), BUSYBOX)?;

    let unpacked = work.path().join("root");
    for deb in [&kernel_deb, &busybox_deb] {
        progress(&format!("unpacking {} (dpkg-deb -x)", file_name(deb)));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    }
    let vmlinuz = find_vmlinuz(&unpacked.join("boot"))?;
    let busybox = unpacked.join("bin").join("busybox");
    if !busybox.is_file() {
        return Err(GuestError::Package(format!("{} has no bin/busybox", file_name(&busybox_deb))));
    }
    check_files(&vmlinuz, &busybox)?;

    let mut manifest = String::new();
    for deb in [&meta, &kernel_deb, &busybox_deb] {
        manifest.push_str(&format!("{} {}\n", dpkg_field(deb, "Package")?, dpkg_field(deb, "Version")?));
    }
    progress(&format!("caching the kernel and busybox in {}", files.display()));
    // Busybox first: the kernel's presence is not what says "cached", both are.
    install(&busybox, &cache.busybox())?;
    install(&vmlinuz, &cache.kernel())?;
    let staged = work.path().join("packages.txt");
    std::fs::write(&staged, manifest).map_err(io_error("cannot write", &staged))?;
    install(&staged, &cache.manifest())?;
    drop(work);
    progress("done");
    cache.cached().ok_or_else(|| GuestError::Package("the cached files vanished after the fetch".into()))
}

/// Check the unpacked files before caching them: the kernel must be a
/// little-endian ARM zImage, busybox a 32-bit ARM ELF.
fn check_files(vmlinuz: &Path, busybox: &Path) -> Result<(), GuestError> {
    let kernel = std::fs::read(vmlinuz).map_err(io_error("cannot read", vmlinuz))?;
    match crate::images::detect(&kernel) {
        Ok(crate::images::KernelFormat::ZImage) => {}
        other => {
            return Err(GuestError::Package(format!("{} is not an ARM zImage ({other:?})", vmlinuz.display())));
        }
    }
    let bytes = std::fs::read(busybox).map_err(io_error("cannot read", busybox))?;
    let elf = object::read::elf::ElfFile32::<object::Endianness>::parse(&*bytes);
    let arm =
        elf.is_ok_and(|f| object::read::elf::FileHeader::e_machine(f.elf_header(), f.endian()) == object::elf::EM_ARM);
    if !arm {
        return Err(GuestError::Package(format!("{} is not a 32-bit ARM ELF", busybox.display())));
    }
    Ok(())
}

/// Remove the work directories of fetches that were interrupted (killed
/// before their temporary directory was removed). Only called under the
/// lock, so none of them belongs to a fetch in progress.
fn remove_stale_work(files: &Path) {
    let Ok(entries) = std::fs::read_dir(files) else { return };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                log::warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// Move a file into place: a rename within the cache's file system, atomic.
fn install(from: &Path, to: &Path) -> Result<(), GuestError> {
    std::fs::rename(from, to).map_err(io_error("cannot move a fetched file to", to))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Hold an exclusive lock on `path` (created if needed) until dropped.
fn lock(path: &Path) -> Result<File, GuestError> {
    use rustix::fs::{flock, FlockOperation};
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("cannot open the lock file", path))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        progress("waiting for another splitvisor that is fetching the guest");
        flock(&file, FlockOperation::LockExclusive).map_err(|e| GuestError::Io {
            what: "cannot lock",
            path: path.into(),
            source: e.into(),
        })?;
    }
    Ok(file)
}

/// The one `vmlinuz-*` in an unpacked kernel package's `boot/`.
pub fn find_vmlinuz(boot: &Path) -> Result<PathBuf, GuestError> {
    let entries = std::fs::read_dir(boot).map_err(io_error("cannot read the unpacked kernel package's", boot))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(GuestError::Package(format!("{} holds {n} vmlinuz-* files, not one", boot.display()))),
    }
}

/// The kernel package a `linux-image-armmp` `Depends` field names, and the
/// version it pins: `linux-image-6.1.0-50-armmp (= 6.1.176-1)` gives
/// (`linux-image-6.1.0-50-armmp`, `Some("6.1.176-1")`). Alternatives
/// (`a | b`) are all considered; the first `linux-image-*-armmp` wins.
pub fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    depends.split([',', '|']).find_map(|dep| {
        let dep = dep.trim();
        let (name, constraint) = match dep.split_once('(') {
            Some((name, rest)) => (name.trim(), Some(rest.trim_end_matches(')').trim())),
            None => (dep, None),
        };
        let name = name.split(':').next().unwrap_or(name);
        if !(name.starts_with("linux-image-") && name.ends_with("-armmp") && name != KERNEL_META) {
            return None;
        }
        let version = constraint.and_then(|c| c.strip_prefix('=')).map(|v| v.trim().to_string());
        Some((name.to_string(), version))
    })
}

/// A field of a package's control file (`dpkg-deb -f DEB FIELD`).
fn dpkg_field(deb: &Path, field: &str) -> Result<String, GuestError> {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run a command to completion, its output captured; a failure keeps the
/// end of it.
fn run(cmd: &mut Command) -> Result<Output, GuestError> {
    let command = describe(cmd);
    let out =
        cmd.stdin(Stdio::null()).output().map_err(|source| GuestError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        return Ok(out);
    }
    Err(GuestError::Command { command, status: out.status, output: tail(&out) })
}

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn tail(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    lines.get(lines.len().saturating_sub(TAIL_LINES)..).unwrap_or_default().join("\n")
}

/// What fetching does with apt, and what it asks a non-root user to do.
struct Apt {
    root: bool,
    /// `apt-get update` has run (or was found needed and failed).
    updated: bool,
}

impl Apt {
    fn new(root: bool) -> Apt {
        Apt { root, updated: false }
    }

    fn check_tools(&self) -> Result<(), GuestError> {
        for tool in ["apt-get", "dpkg", "dpkg-deb"] {
            match Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(GuestError::NoApt(tool.into())),
                Err(source) => return Err(GuestError::Spawn { command: format!("{tool} --version"), source }),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// dpkg must know armhf, natively or as a foreign architecture.
    fn ensure_arch(&mut self) -> Result<(), GuestError> {
        let native = run(Command::new("dpkg").arg("--print-architecture"))?;
        let foreign = run(Command::new("dpkg").arg("--print-foreign-architectures"))?;
        let known = [native, foreign]
            .iter()
            .any(|out| String::from_utf8_lossy(&out.stdout).split_whitespace().any(|a| a == ARCH));
        if known {
            return Ok(());
        }
        if !self.root {
            return Err(GuestError::NeedsRoot(needs_root_commands(true)));
        }
        progress(&format!("adding the {ARCH} architecture (dpkg --add-architecture {ARCH})"));
        run(Command::new("dpkg").args(["--add-architecture", ARCH]))?;
        self.update()?;
        Ok(())
    }

    /// `apt-get update`. A non-zero status is tolerated: one stale mirror
    /// ("File has unexpected size ... Mirror sync in progress") fails the
    /// whole command while the index needed is fine; the download that
    /// follows tells.
    fn update(&mut self) -> Result<(), GuestError> {
        self.updated = true;
        if !self.root {
            return Err(GuestError::NeedsRoot(needs_root_commands(false)));
        }
        progress("updating the package lists (apt-get update)");
        match run(Command::new("apt-get").args(["-q", "update"])) {
            Ok(_) => {}
            Err(GuestError::Command { status, output, .. }) => {
                let last = output.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_string();
                progress(&format!("apt-get update ended with {status} ({last}); trying the download anyway"));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// `apt-get download SPEC` in `dir`, after `apt-get update` if the
    /// first try fails; the path of the `.deb` of package `name`.
    fn download(&mut self, dir: &Path, spec: &str, name: &str) -> Result<PathBuf, GuestError> {
        let attempt = || run(Command::new("apt-get").args(["-q", "download", spec]).current_dir(dir));
        match attempt() {
            Ok(_) => {}
            Err(first) if !self.updated => {
                log::debug!("apt-get download {spec}: {first}");
                self.update()?;
                attempt()?;
            }
            Err(e) => return Err(e),
        }
        find_deb(dir, name)
    }
}

/// What a user without root must run, with or without adding armhf.
fn needs_root_commands(add_arch: bool) -> String {
    let add = if add_arch { format!("sudo dpkg --add-architecture {ARCH} && ") } else { String::new() };
    format!("`{add}sudo apt-get update`, then `splitvisor guest fetch` (or pass your own --kernel)")
}

/// The `.deb` of package `name` that apt-get download left in `dir`
/// (`NAME_VERSION_ARCH.deb`).
fn find_deb(dir: &Path, name: &str) -> Result<PathBuf, GuestError> {
    let prefix = format!("{name}_");
    let entries = std::fs::read_dir(dir).map_err(io_error("cannot read", dir))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .ok_or_else(|| GuestError::Package(format!("apt-get download left no {prefix}*.deb in {}", dir.display())))
}

/// The default guest's initramfs: busybox and the default `/init`
/// ([`initramfs::DEFAULT_INIT`]), or `init` if given, gzip-compressed.
pub fn initramfs(guest: &DefaultGuest, init: Option<Vec<u8>>) -> Result<Vec<u8>, GuestError> {
    let busybox = std::fs::read(&guest.busybox).map_err(io_error("cannot read", &guest.busybox))?;
    let init = init.unwrap_or_else(|| initramfs::DEFAULT_INIT.as_bytes().to_vec());
    Ok(initramfs::busybox_initramfs(busybox, init)?.to_gzip()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_location_precedence() {
        let c = Cache::from_vars(os("/c"), os("/x"), os("/h")).unwrap();
        assert_eq!(c.dir(), Path::new("/c"));
        let c = Cache::from_vars(None, os("/x"), os("/h")).unwrap();
        assert_eq!(c.dir(), Path::new("/x/splitvisor"));
        let c = Cache::from_vars(os(""), os("relative"), os("/h")).unwrap();
        assert_eq!(c.dir(), Path::new("/h/.cache/splitvisor"), "empty and relative values are skipped");
        assert!(matches!(Cache::from_vars(None, None, os("")), Err(GuestError::NoCacheDir)));
        let c = Cache::from_vars(os("rel"), None, None).unwrap();
        assert!(c.dir().is_absolute() && c.dir().ends_with("rel"));
        assert_eq!(c.kernel(), c.dir().join("debian-armhf/vmlinuz"));
        assert_eq!(c.busybox(), c.dir().join("debian-armhf/busybox"));
    }

    #[test]
    fn cached_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::from_vars(Some(dir.path().into()), None, None).unwrap();
        assert_eq!(cache.cached(), None);
        std::fs::create_dir_all(cache.files()).unwrap();
        std::fs::write(cache.kernel(), b"k").unwrap();
        assert_eq!(cache.cached(), None);
        std::fs::write(cache.busybox(), b"b").unwrap();
        assert_eq!(cache.cached(), Some(DefaultGuest { kernel: cache.kernel(), busybox: cache.busybox() }));
        assert_eq!(ensure(&cache).unwrap().kernel, cache.kernel(), "a cached guest needs no fetch");
    }

    #[test]
    fn kernel_dependency_of_the_meta_package() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-50-armmp (= 6.1.176-1)"),
            Some(("linux-image-6.1.0-50-armmp".into(), Some("6.1.176-1".into())))
        );
        assert_eq!(
            kernel_dependency("foo (>= 1), linux-image-6.1.0-9-armmp | linux-image-6.1.0-9-armmp-unsigned"),
            Some(("linux-image-6.1.0-9-armmp".into(), None))
        );
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-9-armmp:armhf (>= 6.1)"),
            Some(("linux-image-6.1.0-9-armmp".into(), None)),
            "only = pins a version"
        );
        assert_eq!(kernel_dependency("linux-image-6.1.0-9-arm64 (= 1)"), None);
        assert_eq!(kernel_dependency(""), None);
        assert_eq!(kernel_dependency("linux-image-armmp"), None, "not itself");
    }

    #[test]
    fn finds_one_vmlinuz_and_one_deb() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_vmlinuz(dir.path()).is_err());
        std::fs::write(dir.path().join("config-6.1.0-50-armmp"), b"").unwrap();
        std::fs::write(dir.path().join("vmlinuz-6.1.0-50-armmp"), b"").unwrap();
        assert_eq!(find_vmlinuz(dir.path()).unwrap(), dir.path().join("vmlinuz-6.1.0-50-armmp"));
        std::fs::write(dir.path().join("vmlinuz-6.1.0-51-armmp"), b"").unwrap();
        assert!(matches!(find_vmlinuz(dir.path()), Err(GuestError::Package(_))));

        std::fs::write(dir.path().join("linux-image-armmp_6.1.176-1_armhf.deb"), b"").unwrap();
        std::fs::write(dir.path().join("busybox-static_1%3a1.35.0-4_armhf.deb"), b"").unwrap();
        assert!(find_deb(dir.path(), "busybox-static").is_ok());
        assert!(find_deb(dir.path(), "linux-image-armmp").is_ok());
        assert!(find_deb(dir.path(), "linux-image-6.1.0-50-armmp").is_err());
    }

    #[test]
    fn a_user_is_told_the_commands() {
        let with_arch = GuestError::NeedsRoot(needs_root_commands(true)).to_string();
        assert!(with_arch.contains("`sudo dpkg --add-architecture armhf && sudo apt-get update`"), "{with_arch}");
        assert!(with_arch.contains("splitvisor guest fetch"));
        let without = needs_root_commands(false);
        assert!(!without.contains("add-architecture") && without.contains("sudo apt-get update"));
        // Not root: an update is asked for, not run.
        assert!(matches!(Apt::new(false).update(), Err(GuestError::NeedsRoot(_))));
    }

    #[test]
    fn failed_commands_keep_their_output() {
        let err = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("`sh -c echo out; echo err >&2; exit 3` failed"), "{text}");
        assert!(text.contains("out") && text.contains("err"), "{text}");
        assert!(matches!(run(&mut Command::new("/nonexistent/apt-get")), Err(GuestError::Spawn { .. })));
    }
}
