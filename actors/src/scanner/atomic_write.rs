//! Replacing a file the host reads (a reaped ghost's `status.json`) so that a reader
//! sees the old bytes or the new ones, never half of them.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temp file beside `path`, fsyncs it, and renames it over `path`.
/// The temp name carries the process id, so two processes never share one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"{\"new\":true}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"new\":true}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }
}
