//! A small file the kernel makes up on each read (/proc, cgroup and sysfs
//! files), kept open and read again from offset 0 at every sample.
//!
//! The kernel regenerates such a file whenever it is read from the start, so the
//! open is needed only once. Opening is the dear part: B5 measured the path
//! walks of re-opening every file each second at well over a third of the
//! agent's CPU with 50 containers.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Bytes asked for per read: every file the agent keeps is smaller, so one read
/// returns it whole.
const CHUNK: usize = 8192;

#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    /// None until opened, and again after a failed read (the file went away).
    file: Option<File>,
}

impl KeptFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path, file: None }
    }

    /// The file's whole text as of now, read into `buf`; None when it cannot be
    /// opened or read (it is opened afresh next time).
    pub fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> Option<&'b str> {
        buf.clear();
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let file = self.file.as_ref()?;
        loop {
            let filled = buf.len();
            buf.resize(filled + CHUNK, 0);
            match file.read_at(&mut buf[filled..], filled as u64) {
                Ok(n) => {
                    buf.truncate(filled + n);
                    // Generated files hand over all they have when asked for
                    // more: a short read is the end, and saves a second call.
                    if n < CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => buf.truncate(filled),
                Err(_) => {
                    self.file = None;
                    return None;
                }
            }
        }
        std::str::from_utf8(buf).ok()
    }

    /// The file's text parsed as one number.
    pub fn read_u64(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        self.read(buf)?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_rewrites_and_a_missing_file_reads_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let mut buf = Vec::new();
        let mut f = KeptFile::new(path.clone());
        assert_eq!(f.read(&mut buf), None, "not there yet");
        std::fs::write(&path, "12\n").unwrap();
        assert_eq!(f.read_u64(&mut buf), Some(12));
        std::fs::write(&path, "7\n").unwrap();
        assert_eq!(f.read_u64(&mut buf), Some(7), "the same open file, rewritten in place");
        let long = "x".repeat(3 * CHUNK);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(f.read(&mut buf).map(str::len), Some(long.len()), "longer than one read");
    }

    #[test]
    fn proc_files_regenerate_on_every_read() {
        let mut buf = Vec::new();
        let mut stat = KeptFile::new("/proc/self/stat".into());
        let first = stat.read(&mut buf).unwrap().to_owned();
        // Burn a little CPU so the process's utime or its minor faults move.
        let v: Vec<u64> = (0..2_000_000).collect();
        std::hint::black_box(&v);
        let second = stat.read(&mut buf).unwrap().to_owned();
        assert_ne!(first, second, "a kept /proc file reread from offset 0 shows fresh figures");
    }
}
