//! Reading the file of a `${file:PATH}` reference: regular files only, bounded, never blocking.
//!
//! - Symlinks are followed (Kubernetes secret mounts are symlinks into `..data/`).
//! - A FIFO, device, socket or directory is refused from its metadata, before it is opened.
//!   The open is non-blocking too, and the opened file is checked again, so a path swapped for
//!   a FIFO between the check and the open cannot hang `config check` either.
//! - Kernel pseudo-files are refused: `/proc/self/environ` is a "regular file" of size 0 whose
//!   content is the whole environment. A file that yields more bytes than its size said is
//!   refused (the same check catches a file being written while it is read).
//! - At most [`MAX_SECRET_FILE_BYTES`].
//!
//! Errors give the io error kind, never the path (it is part of the reference's text) nor the
//! content.

use rustix::fs::{Mode, OFlags};
use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// Largest `${file:...}` accepted: a secret is small, and a cap keeps a mistaken path (a log
/// file, a disk image) from eating the coordinator's memory.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileRefError {
    #[error("cannot read the file: {0}")]
    Unreadable(io::ErrorKind),
    #[error("not a regular file ({0}); only regular files (or symlinks to them) are read")]
    NotRegular(&'static str),
    #[error("the file is larger than {MAX_SECRET_FILE_BYTES} bytes")]
    TooLarge,
    #[error("the file yielded more bytes than its size (a kernel pseudo-file such as /proc/..., or a file being written): refused")]
    SizeMismatch,
    #[error("the file is not UTF-8 text")]
    NotUtf8,
}

/// The content of the regular file at `path` (symlinks followed).
pub(crate) fn read(path: &Path) -> Result<String, FileRefError> {
    let unreadable = |e: io::Error| FileRefError::Unreadable(e.kind());
    check(&std::fs::metadata(path).map_err(unreadable)?)?;
    // O_NONBLOCK: opening a FIFO for reading blocks until a writer appears; a regular file
    // ignores the flag. O_NOCTTY: a terminal swapped in must not become ours.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| unreadable(e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(unreadable)?;
    check(&meta)?;
    let size = meta.len();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte more than the size says, to see a file that has more to give.
    (&file)
        .take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > size {
        return Err(FileRefError::SizeMismatch);
    }
    String::from_utf8(bytes).map_err(|_| FileRefError::NotUtf8)
}

fn check(meta: &Metadata) -> Result<(), FileRefError> {
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(FileRefError::NotRegular(describe(kind)));
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(FileRefError::TooLarge);
    }
    Ok(())
}

fn describe(kind: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_and_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw\n").unwrap();
        assert_eq!(read(&file).unwrap(), "pw\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link).unwrap(), "pw\n");
        std::fs::write(dir.path().join("empty"), "").unwrap();
        assert_eq!(read(&dir.path().join("empty")).unwrap(), "");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path()),
            Err(FileRefError::NotRegular("a directory"))
        );
        assert_eq!(
            read(Path::new("/dev/null")),
            Err(FileRefError::NotRegular("a device"))
        );
        assert_eq!(
            read(&dir.path().join("missing")),
            Err(FileRefError::Unreadable(io::ErrorKind::NotFound))
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        // No writer ever opens it: a blocking open would hang this test.
        assert_eq!(read(&fifo), Err(FileRefError::NotRegular("a FIFO")));
    }

    #[test]
    fn kernel_pseudo_files_are_refused() {
        // Size 0 per stat, content: the whole environment.
        assert_eq!(
            read(Path::new("/proc/self/environ")),
            Err(FileRefError::SizeMismatch)
        );
    }

    #[test]
    fn large_and_binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(read(&big), Err(FileRefError::TooLarge));
        let binary = dir.path().join("bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read(&binary), Err(FileRefError::NotUtf8));
    }
}
