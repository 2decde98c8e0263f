//! Initial RAM file systems: the busybox initramfs of the default guest,
//! written as a gzip-compressed `newc` cpio archive, the format Linux
//! unpacks into its root file system
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Built in Rust rather than with `cpio -H newc`, which a fresh machine may
//! not have: the `cpio` crate writes the archive, `flate2` compresses it.

use std::collections::BTreeSet;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// The default guest's `/init`: mounts `/proc`, `/sys`, `/dev`, installs the
/// busybox applets, prints a banner and runs an interactive shell on the
/// console with job control; leaving it powers the VM off.
pub const DEFAULT_INIT: &str = include_str!("init.sh");

/// File type bits of `st_mode` (`<sys/stat.h>`, as newc's `c_mode` carries
/// them).
mod mode {
    /// A directory.
    pub const DIR: u32 = 0o040_000;
    /// A regular file.
    pub const FILE: u32 = 0o100_000;
    /// A symbolic link.
    pub const SYMLINK: u32 = 0o120_000;
    /// A character device.
    pub const CHAR_DEVICE: u32 = 0o020_000;
    /// The permission bits.
    pub const PERMISSIONS: u32 = 0o7777;
}

/// `/dev/console`: character device 5:1 (`Documentation/admin-guide/devices.txt`).
/// Linux opens it for `/init`'s standard streams before `/init` runs, so it
/// must exist before devtmpfs is mounted.
const CONSOLE_MAJOR: u32 = 5;
const CONSOLE_MINOR: u32 = 1;

/// Why an initramfs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A path that cannot be in the archive.
    #[error("initramfs path {0:?}: must be relative, without `.`, `..` or empty components")]
    BadPath(String),
    /// The same path twice.
    #[error("initramfs path {0:?} given twice")]
    Duplicate(String),
    /// A parent directory missing.
    #[error("initramfs path {0:?}: its directory is not in the archive")]
    NoParent(String),
    /// A file larger than newc's 32-bit size field.
    #[error("initramfs file {path:?} is {size} bytes: newc holds at most 4 GiB - 1")]
    TooBig {
        /// The path.
        path: String,
        /// Its size.
        size: usize,
    },
    /// Writing the archive failed (in memory: only the compressor can fail).
    #[error("writing the initramfs: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    path: String,
    permissions: u32,
    kind: Kind,
}

/// An initramfs being put together, entry by entry, in archive order
/// (a directory before what it holds).
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
    paths: BTreeSet<String>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn add(&mut self, path: &str, permissions: u32, kind: Kind) -> Result<&mut Self, InitramfsError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(InitramfsError::BadPath(path.into()));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            let is_dir = self.entries.iter().any(|e| e.path == parent && e.kind == Kind::Dir);
            if !is_dir {
                return Err(InitramfsError::NoParent(path.into()));
            }
        }
        if !self.paths.insert(path.into()) {
            return Err(InitramfsError::Duplicate(path.into()));
        }
        self.entries.push(Entry { path: path.into(), permissions: permissions & mode::PERMISSIONS, kind });
        Ok(self)
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, permissions: u32) -> Result<&mut Self, InitramfsError> {
        self.add(path, permissions, Kind::Dir)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, permissions: u32, data: Vec<u8>) -> Result<&mut Self, InitramfsError> {
        if u32::try_from(data.len()).is_err() {
            return Err(InitramfsError::TooBig { path: path.into(), size: data.len() });
        }
        self.add(path, permissions, Kind::File(data))
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        self.add(path, 0o777, Kind::Symlink(target.into()))
    }

    /// A character device node.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.add(path, permissions, Kind::CharDevice { major, minor })
    }

    /// The uncompressed `newc` archive, trailer included. Owner root,
    /// modification time 0: the same inputs give the same bytes.
    pub fn to_cpio(&self) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let (type_bits, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.kind {
                Kind::Dir => (mode::DIR, 2, &[], (0, 0)),
                Kind::File(data) => (mode::FILE, 1, data, (0, 0)),
                Kind::Symlink(target) => (mode::SYMLINK, 1, target.as_bytes(), (0, 0)),
                Kind::CharDevice { major, minor } => (mode::CHAR_DEVICE, 1, &[], (*major, *minor)),
            };
            let size = u32::try_from(data.len())
                .map_err(|_| InitramfsError::TooBig { path: entry.path.clone(), size: data.len() })?;
            // Inode numbers only need to be unique (Linux links files
            // sharing one only when their nlink is above 1).
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let mut writer = cpio::NewcBuilder::new(&entry.path)
                .ino(ino)
                .mode(type_bits | entry.permissions)
                .nlink(nlink)
                .rdev_major(rdev.0)
                .rdev_minor(rdev.1)
                .write(&mut out, size);
            // The writer pads the entry only when exactly `size` bytes went
            // in; write_all gives it all of them or fails.
            writer.write_all(data)?;
            writer.finish()?;
        }
        cpio::newc::trailer(&mut out)?;
        Ok(out)
    }

    /// The archive, gzip-compressed (Linux's `CONFIG_RD_GZIP`, which every
    /// Debian kernel has).
    pub fn to_gzip(&self) -> Result<Vec<u8>, InitramfsError> {
        let cpio = self.to_cpio()?;
        let mut gz = GzEncoder::new(Vec::with_capacity(cpio.len() / 2), Compression::default());
        gz.write_all(&cpio)?;
        Ok(gz.finish()?)
    }
}

/// The skeleton of a busybox initramfs: the directories busybox installs
/// its applets into and the kernel's mount points, `/dev/console`,
/// `/bin/busybox` and `/bin/sh`, and `init` as `/init` (a busybox `sh`
/// script, starting `#!/bin/busybox sh`, or any program).
pub fn busybox_initramfs(busybox: Vec<u8>, init: Vec<u8>) -> Result<Initramfs, InitramfsError> {
    let mut fs = Initramfs::new();
    for dir in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root", "etc"] {
        fs.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    fs.char_device("dev/console", 0o600, CONSOLE_MAJOR, CONSOLE_MINOR)?;
    fs.file("bin/busybox", 0o755, busybox)?;
    fs.symlink("bin/sh", "busybox")?;
    fs.file("init", 0o755, init)?;
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Read an archive back with the `cpio` crate's reader:
    /// (name, mode, nlink, rdev, data) per entry, the trailer excluded.
    type Listed = (String, u32, u32, (u32, u32), Vec<u8>);

    fn list(mut archive: &[u8]) -> Vec<Listed> {
        let mut out = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(archive).unwrap();
            if reader.entry().is_trailer() {
                archive = reader.finish().unwrap();
                break;
            }
            let e = reader.entry();
            let meta = (e.name().to_string(), e.mode(), e.nlink(), (e.rdev_major(), e.rdev_minor()));
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            out.push((meta.0, meta.1, meta.2, meta.3, data));
            archive = reader.finish().unwrap();
        }
        assert!(archive.is_empty(), "bytes after the trailer");
        out
    }

    #[test]
    fn a_busybox_initramfs_reads_back() {
        let fs = busybox_initramfs(b"\x7fELF busybox".to_vec(), DEFAULT_INIT.as_bytes().to_vec()).unwrap();
        let cpio = fs.to_cpio().unwrap();
        assert!(cpio.starts_with(b"070701"), "newc magic");
        assert_eq!(cpio.len() % 4, 0, "newc entries are 4-byte aligned");
        let entries = list(&cpio);
        let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(find("dev/console").1, 0o020_600);
        assert_eq!(find("dev/console").3, (5, 1));
        assert_eq!(find("bin/busybox").1, 0o100_755);
        assert_eq!(find("bin/busybox").4, b"\x7fELF busybox");
        assert_eq!(find("bin/sh").1, 0o120_777);
        assert_eq!(find("bin/sh").4, b"busybox");
        assert_eq!(find("tmp").1, 0o041_777);
        assert_eq!(find("bin").2, 2);
        let init = find("init");
        assert_eq!(init.1, 0o100_755);
        assert!(init.4.starts_with(b"#!/bin/busybox sh\n"));
        // Directories come before what they hold.
        let pos = |name: &str| entries.iter().position(|e| e.0 == name).unwrap();
        assert!(pos("dev") < pos("dev/console") && pos("bin") < pos("bin/busybox"));
        // Unique inode numbers.
        let mut inos: Vec<u32> = Vec::new();
        let mut rest: &[u8] = &cpio;
        loop {
            let r = cpio::NewcReader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            inos.push(r.entry().ino());
            rest = r.finish().unwrap();
        }
        let unique: BTreeSet<_> = inos.iter().collect();
        assert_eq!(unique.len(), inos.len());
    }

    #[test]
    fn gzip_decompresses_to_the_archive() {
        let mut fs = Initramfs::new();
        fs.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        let gz = fs.to_gzip().unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut cpio).unwrap();
        assert_eq!(cpio, fs.to_cpio().unwrap());
        // The same inputs give the same bytes.
        assert_eq!(gz, fs.to_gzip().unwrap());
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut fs = Initramfs::new();
        fs.dir("bin", 0o755).unwrap();
        for bad in ["", "/", "a//b", "../etc", "bin/./x", "bin/.."] {
            assert!(matches!(fs.file(bad, 0o644, vec![]), Err(InitramfsError::BadPath(_))), "{bad:?}");
        }
        assert!(matches!(fs.dir("/bin", 0o755), Err(InitramfsError::Duplicate(_))));
        assert!(matches!(fs.file("etc/passwd", 0o644, vec![]), Err(InitramfsError::NoParent(_))));
        // A file is no directory.
        fs.file("bin/x", 0o755, vec![]).unwrap();
        assert!(matches!(fs.file("bin/x/y", 0o755, vec![]), Err(InitramfsError::NoParent(_))));
        // A leading slash is dropped, as gen_init_cpio does.
        fs.file("/bin/y", 0o4755, vec![1]).unwrap();
        let entries = list(&fs.to_cpio().unwrap());
        assert_eq!(entries.last().unwrap().0, "bin/y");
        assert_eq!(entries.last().unwrap().1, 0o104_755);
    }

    #[test]
    fn the_default_init_does_what_the_readme_says() {
        for needle in [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "--install -s",
            "setsid cttyhack sh",
            "poweroff -f",
        ] {
            assert!(DEFAULT_INIT.contains(needle), "{needle} missing from init.sh");
        }
    }
}
