//! First-use set-up: installing what splitvisor needs from Debian's
//! packages when it is missing, and saying so.
//!
//! Only `qemu-system-arm` is installed here; the `armv7a-none-eabi` target
//! comes with `rust-toolchain.toml` (rustup adds it on the first cargo
//! command), and the default guest is fetched by [`crate::guest`].

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
}
