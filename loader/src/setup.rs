//! First-use set-up: installing what splitvisor needs from Debian's
//! packages when it is missing, and saying so.
//!
//! `qemu-system-arm` comes from Debian's packages ([`ensure_qemu`]); the
//! `armv7a-none-eabi` target from rustup ([`ensure_rust_target`]:
//! `rust-toolchain.toml` names it, but rustup adds a toolchain file's
//! targets only when it installs the toolchain, not to one already there);
//! the default guest is fetched by [`crate::guest`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary splitvisor runs by default.
pub const QEMU: &str = "qemu-system-arm";
/// The Debian package that has it.
pub const QEMU_PACKAGE: &str = "qemu-system-arm";

/// Why a program could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Missing, and installing it is not possible here.
    #[error("{program} is missing; install it with `apt-get install -y {package}` (as root){why}")]
    Missing {
        /// The program.
        program: String,
        /// The package.
        package: String,
        /// Why splitvisor did not install it itself.
        why: String,
    },
    /// apt-get ran and failed.
    #[error("`apt-get install -y {package}` failed ({status}); install it yourself and try again")]
    InstallFailed {
        /// The package.
        package: String,
        /// apt-get's exit status.
        status: std::process::ExitStatus,
    },
}

/// `program` from PATH, if it is there.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` from PATH; when it is missing and splitvisor runs as root on a
/// machine with apt-get, install `package` first (saying so on standard
/// error), as the README's commands promise.
pub fn ensure(program: &str, package: &str) -> Result<PathBuf, SetupError> {
    ensure_with(program, package, find_in_path("apt-get"), is_root())
}

/// [`ensure`] with the facts about the machine given.
fn ensure_with(program: &str, package: &str, apt: Option<PathBuf>, root: bool) -> Result<PathBuf, SetupError> {
    if let Some(found) = find_in_path(program) {
        return Ok(found);
    }
    let missing = |why: &str| SetupError::Missing { program: program.into(), package: package.into(), why: why.into() };
    let Some(apt) = apt else {
        return Err(missing(" (no apt-get on this machine)"));
    };
    if !root {
        return Err(missing(" (splitvisor installs it itself only when run as root)"));
    }
    eprintln!("splitvisor: {program} is missing: installing the Debian package {package} (apt-get update; apt-get install -y {package})");
    // A failed index refresh (a mirror in sync) often still leaves a usable
    // index: go on and let the install say whether it works.
    let _ = Command::new(&apt).args(["update", "-qq"]).status();
    let status = Command::new(&apt)
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|_| missing(" (apt-get could not be started)"))?;
    if !status.success() {
        return Err(SetupError::InstallFailed { package: package.into(), status });
    }
    find_in_path(program).ok_or_else(|| missing(" (the package installed, but the program is still not in PATH)"))
}

/// QEMU for ARM, installed on first use when possible.
pub fn ensure_qemu() -> Result<PathBuf, SetupError> {
    ensure(QEMU, QEMU_PACKAGE)
}

/// Make sure rustup's toolchain for `workspace` has the Rust `target`:
/// when rustup lists it as missing, add it (`rustup target add`), saying
/// so. Without rustup there is nothing to do here: the build that needs the
/// target says what is missing.
pub fn ensure_rust_target(workspace: &Path, target: &str) -> Result<(), String> {
    let Some(rustup) = find_in_path("rustup") else {
        return Ok(());
    };
    let listed = Command::new(&rustup)
        .args(["target", "list", "--installed"])
        .current_dir(workspace)
        .output()
        .map_err(|e| format!("running rustup: {e}"))?;
    if !listed.status.success() || target_listed(&String::from_utf8_lossy(&listed.stdout), target) {
        // A rustup that cannot list (an old one, a toolchain it does not
        // manage) is left to the build to judge.
        return Ok(());
    }
    eprintln!("splitvisor: the Rust target {target} is missing: adding it (rustup target add {target})");
    let status = Command::new(&rustup)
        .args(["target", "add", target])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("running rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {target}` failed ({status})"))
    }
}

/// Whether `rustup target list --installed` printed `target`.
fn target_listed(listing: &str, target: &str) -> bool {
    listing.lines().any(|line| line.trim() == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path_and_explains_a_missing_one() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-program-splitvisor").is_none());
        // A program that is there needs nothing installed.
        assert!(ensure_with("sh", "dash", None, false).is_ok());
        // A missing one: the error says how to install it and why
        // splitvisor did not.
        let err = ensure_with("no-such-program-splitvisor", "some-package", None, true).unwrap_err();
        assert!(err.to_string().contains("apt-get install -y some-package"), "{err}");
        assert!(err.to_string().contains("no apt-get"), "{err}");
        let err = ensure_with("no-such-program-splitvisor", "some-package", Some("/usr/bin/apt-get".into()), false)
            .unwrap_err();
        assert!(err.to_string().contains("only when run as root"), "{err}");
    }

    #[test]
    fn reads_rustups_list_of_installed_targets() {
        let listing = "x86_64-unknown-linux-gnu\narmv7a-none-eabi\n";
        assert!(target_listed(listing, "armv7a-none-eabi"));
        assert!(!target_listed(listing, "armv7a-none-eabihf"));
        assert!(!target_listed("x86_64-unknown-linux-gnu\n", "armv7a-none-eabi"));
    }

    #[test]
    fn the_monitors_target_is_there_after_ensuring_it() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        ensure_rust_target(workspace, crate::monitor::TARGET).expect("rustup target add");
        if let Some(rustup) = find_in_path("rustup") {
            let out = Command::new(rustup)
                .args(["target", "list", "--installed"])
                .current_dir(workspace)
                .output()
                .expect("rustup");
            assert!(target_listed(&String::from_utf8_lossy(&out.stdout), crate::monitor::TARGET));
        }
    }
}
