//! The guest's initramfs, written as an uncompressed cpio `newc` archive (what the kernel unpacks
//! fastest, and no cpio tool is needed): busybox, kpath with its shared libraries, extra binaries
//! at their host paths, and an `/init` script.
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ldd {path} failed: {detail}")]
    Ldd { path: PathBuf, detail: String },
}

/// A newc archive being written.
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Cpio {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let name = name.trim_start_matches('/');
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.write_all(hdr.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> std::io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    /// Creates `path` and its parents (once each).
    pub fn dir(&mut self, path: &str) -> std::io::Result<()> {
        let mut cur = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                self.entry(&cur, 0o040755, &[])?;
            }
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o100000 | mode, data)
    }

    /// A symbolic link at `path` that points to `points_to`.
    pub fn symlink(&mut self, path: &str, points_to: &str) -> std::io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o120777, points_to.as_bytes())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What goes into the guest.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Installed as /bin/kpath.
    pub kpath: PathBuf,
    /// Installed as /bin/busybox.
    pub busybox: PathBuf,
    /// Installed at their own (absolute) paths, with their libraries.
    pub extra: Vec<PathBuf>,
    pub init: String,
}

/// Writes the archive to `out`.
pub fn build(c: &Contents, out: &Path) -> Result<(), InitramfsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitramfsError::Io { path, source }
    };
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut cpio = Cpio::new(BufWriter::with_capacity(1 << 20, file));
    for d in [
        "dev", "proc", "sys", "tmp", "out", "sbin", "usr/bin", "usr/sbin", "run",
    ] {
        cpio.dir(d).map_err(io(out))?;
    }
    let mut libs = BTreeSet::new();
    let mut add_bin = |cpio: &mut Cpio<_>, src: &Path, dst: &str| -> Result<(), InitramfsError> {
        let data = std::fs::read(src).map_err(io(src))?;
        cpio.file(dst, 0o755, &data).map_err(io(out))?;
        libs.extend(shared_libs(src)?);
        Ok(())
    };
    add_bin(&mut cpio, &c.busybox, "/bin/busybox")?;
    add_bin(&mut cpio, &c.kpath, "/bin/kpath")?;
    for e in &c.extra {
        add_bin(&mut cpio, e, &e.to_string_lossy())?;
    }
    libs.insert(PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
    for lib in &libs {
        // A library that is a symlink is stored as the file it points to, under the name the
        // loader asks for (std::fs::read follows the link).
        let data = std::fs::read(lib).map_err(io(lib))?;
        cpio.file(&lib.to_string_lossy(), 0o755, &data)
            .map_err(io(out))?;
        // Its detached symbols too (Debian's libc6-dbg, say): stacks are symbolized inside
        // the guest, and a stripped libc names neither start_thread nor clone3.
        if let Some(debug) = detached_debug_file(&data) {
            let bytes = std::fs::read(&debug).map_err(io(&debug))?;
            cpio.file(&debug.to_string_lossy(), 0o644, &bytes)
                .map_err(io(out))?;
        }
    }
    cpio.file("/init", 0o755, c.init.as_bytes())
        .map_err(io(out))?;
    cpio.finish().map_err(io(out))?;
    Ok(())
}

/// The host's `/usr/lib/debug/.build-id/xx/rest.debug` of an ELF image, when it is there.
fn detached_debug_file(elf: &[u8]) -> Option<PathBuf> {
    let file = object::File::parse(elf).ok()?;
    let id = object::Object::build_id(&file).ok()??;
    let path = Path::new("/usr/lib/debug/.build-id").join(build_id_path(id));
    path.is_file().then_some(path)
}

/// `xx/rest.debug` for build-id bytes (the layout gdb and debuginfod use).
fn build_id_path(id: &[u8]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    match hex.split_at_checked(2) {
        Some((dir, rest)) => format!("{dir}/{rest}.debug"),
        None => format!("{hex}.debug"),
    }
}

/// Absolute library paths `ldd` lists for `bin` (none for a static binary).
pub fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| InitramfsError::Ldd {
            path: bin.into(),
            detail: e.to_string(),
        })?;
    // ldd exits 1 with "not a dynamic executable" for static binaries.
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_files_are_found_by_build_id() {
        assert_eq!(build_id_path(&[0x93, 0xac, 0x61, 0x0e]), "93/ac610e.debug");
    }

    #[test]
    fn newc_headers_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::new(Vec::new());
        c.file("/bin/x", 0o755, b"hello").unwrap();
        c.symlink("/bin/sh", "busybox").unwrap();
        let v = c.finish().unwrap();
        assert_eq!(&v[..6], b"070701");
        assert_eq!(v.len() % 4, 0);
        let s = String::from_utf8_lossy(&v);
        // The parent directory comes first, then the file with its size (5) in the header.
        assert!(s.contains("bin\0"));
        let at = s.find("bin/x\0").unwrap();
        let hdr = &s[at - 110..at];
        assert_eq!(&hdr[54..62], "00000005", "{hdr}");
        assert_eq!(&hdr[14..22], "000081ed", "{hdr}");
        assert!(s.contains("TRAILER!!!\0"));
    }

    #[test]
    fn ldd_output_yields_absolute_paths_only() {
        let t = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                 \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                 \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(t),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
