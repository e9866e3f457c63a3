//! Reading the files a config names (certificates, keys, CA files, the apps file,
//! fallback bodies): regular files only, and no bigger than a bound, so a path that
//! names a device or a pipe (`/dev/zero`, a FIFO nobody writes) is a precise config
//! error instead of a reload that never ends or fills memory.

use std::io::Read;
use std::path::Path;

/// The contents of `path`, at most `max` bytes. Errors name the path.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: unreadable: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{shown}: larger than {max} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: unreadable: {e}"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded again while reading: the file may grow between the two looks.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: unreadable: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{shown}: larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_big_files_are_refused() {
        assert!(read_bounded(Path::new("/dev/zero"), 1024)
            .unwrap_err()
            .contains("not a regular file"));
        assert!(read_bounded(Path::new("/"), 1024)
            .unwrap_err()
            .contains("not a regular file"));
        let dir = std::env::temp_dir().join(format!("ringgate-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_bounded(&f, 10).unwrap(), b"0123456789");
        assert!(read_bounded(&f, 9)
            .unwrap_err()
            .contains("larger than 9 bytes"));
        assert!(read_bounded(&dir.join("missing"), 9)
            .unwrap_err()
            .contains("unreadable"));
    }
}
