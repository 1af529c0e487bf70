//! Listing and reading the manifest directory: which paths are manifests, and reading one
//! without blocking on what is not a regular file or reading more than the size limit.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::source::SourceError;

/// Which file a content was read from: a new one at a known path was renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId(u64, u64);

impl FileId {
    pub(super) fn of(meta: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId(meta.dev(), meta.ino())
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileId(0, 0)
        }
    }
}

/// What reading one listed path gave.
pub(super) enum Reading {
    Content(Vec<u8>, FileId),
    Directory,
    Special,
    TooBig(u64),
}

/// Reads a regular file of at most `max` bytes (following symlinks); anything else is
/// not opened (opening a pipe would block until someone writes to it).
pub(super) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Reading> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(Reading::Directory);
    }
    if !meta.is_file() {
        return Ok(Reading::Special);
    }
    if meta.len() > max {
        return Ok(Reading::TooBig(meta.len()));
    }
    let file = std::fs::File::open(path)?;
    let id = FileId::of(&file.metadata()?);
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Reading::TooBig(bytes.len() as u64));
    }
    Ok(Reading::Content(bytes, id))
}

/// Whether a file name is one the source reads.
pub(super) fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Every entry named `*.yaml` / `*.yml` below `root`, whatever it is (hidden entries and
/// symlinked directories are not walked). An unreadable subdirectory is reported in
/// `errors` and skipped; only an unreadable `root` is an error.
pub(super) fn manifest_paths(
    root: &Path,
    errors: &mut Vec<SourceError>,
) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir == root => return Err(e),
            Err(e) => {
                errors.push(SourceError {
                    path: dir.display().to_string(),
                    document: None,
                    reason: format!("cannot read this directory, skipped: {e}"),
                });
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue; // editor swap files, rsync's temporary files, hidden directories
            }
            // file_type() does not follow symlinks: a symlinked directory is not walked (no
            // loops); a symlinked file is read like any file.
            if entry.file_type().is_ok_and(|k| k.is_dir()) {
                dirs.push(path.clone());
            }
            if is_manifest_name(name) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
