//! Stock Debian kernels for guests: resolved from `linux-image-amd64` of a suite, downloaded once
//! with apt through a private sources list and lists directory (the system's apt configuration and
//! caches are left untouched), cached as the uncompressed `vmlinux` qboot boots fastest.
use std::path::{Path, PathBuf};
use std::process::Command;

/// Suites `--kernel` accepts by name (their `linux-image-amd64`).
pub const SUITES: &[&str] = &["bookworm", "bullseye", "trixie"];

/// xz stream magic: where the compressed kernel starts inside a bzImage.
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d")]
    NoMirror,
    #[error("{what} failed: {detail}")]
    Tool { what: String, detail: String },
    #[error("linux-image-amd64 of {suite} names no linux-image-* package")]
    NoImagePackage { suite: String },
    #[error("{path}: no xz-compressed kernel inside")]
    NotXz { path: PathBuf },
    #[error("{path}: neither an ELF vmlinux nor a bzImage")]
    UnknownImage { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A bootable kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// What the user asked for (`bookworm`, or the path).
    pub name: String,
    /// `6.1.0-56-amd64` when known from the package.
    pub release: Option<String>,
    /// The image to pass to `-kernel`.
    pub image: PathBuf,
    /// Whether `image` is an uncompressed ELF vmlinux (boots with qboot) or a bzImage.
    pub elf: bool,
}

/// `$XDG_CACHE_HOME/kpath/kernels`, else `~/.cache/kpath/kernels`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("kpath/kernels")
}

/// Resolves `--kernel`: a suite name (fetched once, then cached) or a path to a vmlinux/vmlinuz.
pub fn resolve(spec: &str, progress: &dyn Fn(&str)) -> Result<Kernel, FetchError> {
    if SUITES.contains(&spec) {
        return suite_kernel(spec, &cache_dir().join(spec), progress);
    }
    let path = PathBuf::from(spec);
    let head = read_head(&path)?;
    if head.starts_with(b"\x7fELF") {
        return Ok(Kernel {
            name: spec.into(),
            release: None,
            image: path,
            elf: true,
        });
    }
    // A bzImage: cut the vmlinux out next to it in the cache; boot the bzImage if that fails.
    if head.len() > 0x206 && &head[0x202..0x206] == b"HdrS" {
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = cache_dir().join("local").join(format!("{stem}.vmlinux"));
        if !out.exists() {
            std::fs::create_dir_all(out.parent().expect("has parent")).map_err(io(&out))?;
            if extract_vmlinux(&path, &out).is_err() {
                return Ok(Kernel {
                    name: spec.into(),
                    release: None,
                    image: path,
                    elf: false,
                });
            }
        }
        return Ok(Kernel {
            name: spec.into(),
            release: None,
            image: out,
            elf: true,
        });
    }
    Err(FetchError::UnknownImage { path })
}

fn read_head(path: &Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf).map_err(io(path))?;
    buf.truncate(n);
    Ok(buf)
}

/// The cached kernel of `suite`, fetching it first when the cache has none.
fn suite_kernel(suite: &str, dir: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, FetchError> {
    let marker = dir.join("release");
    if let Ok(release) = std::fs::read_to_string(&marker) {
        let release = release.trim().to_string();
        let image = dir.join(format!("vmlinux-{release}"));
        if image.exists() {
            return Ok(Kernel {
                name: suite.into(),
                release: Some(release),
                image,
                elf: true,
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let deb = download_image_deb(suite, dir, progress)?;
    let unpack = dir.join("unpacked");
    let (vmlinuz, release) = unpack_vmlinuz(&deb, &unpack)?;
    let image = dir.join(format!("vmlinux-{release}"));
    extract_vmlinux(&vmlinuz, &image)?;
    let keep = dir.join(format!("vmlinuz-{release}"));
    std::fs::rename(&vmlinuz, &keep).map_err(io(&keep))?;
    let _ = std::fs::remove_dir_all(&unpack);
    let _ = std::fs::remove_file(&deb);
    std::fs::write(&marker, format!("{release}\n")).map_err(io(&marker))?;
    Ok(Kernel {
        name: suite.into(),
        release: Some(release),
        image,
        elf: true,
    })
}

/// Downloads the `linux-image-*` package that `linux-image-amd64` of `suite` (and
/// `<suite>-security`) names into `dir`, with a private apt state under `dir/apt`; its path.
fn download_image_deb(
    suite: &str,
    dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, FetchError> {
    let (mirror, security) = find_mirrors()?;
    progress(&format!(
        "fetching the {suite} kernel (with {suite}-security) from {} (once; cached in {})",
        mirror.uri,
        dir.display()
    ));
    let apt = AptDir::new(&dir.join("apt"), suite, &mirror, security.as_ref())?;
    apt.run("apt-get", &["update"])?;
    let show = apt.run(
        "apt-cache",
        &["show", "--no-all-versions", "linux-image-amd64"],
    )?;
    let package = image_package(&show).ok_or_else(|| FetchError::NoImagePackage {
        suite: suite.into(),
    })?;
    progress(&format!("downloading {package}"));
    apt.run_in(dir, "apt-get", &["download", &package])?;
    let prefix = format!("{package}_");
    first_file(dir, |n| n.starts_with(&prefix) && n.ends_with(".deb")).ok_or_else(|| {
        FetchError::Tool {
            what: format!("apt-get download {package}"),
            detail: "no .deb appeared".into(),
        }
    })
}

/// Unpacks only `./boot/vmlinuz-*` of `deb` under `unpack` (the modules, most of the package,
/// stay packed); the vmlinuz and the release its name carries.
fn unpack_vmlinuz(deb: &Path, unpack: &Path) -> Result<(PathBuf, String), FetchError> {
    std::fs::create_dir_all(unpack).map_err(io(unpack))?;
    shell(
        &format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*'",
            deb.display(),
            unpack.display()
        ),
        "dpkg-deb | tar (extracting /boot/vmlinuz-*)",
    )?;
    let boot = unpack.join("boot");
    // Not there at all (tar extracted nothing) is an I/O error naming the directory.
    std::fs::read_dir(&boot).map_err(io(&boot))?;
    let vmlinuz = first_file(&boot, |n| n.starts_with("vmlinuz-"))
        .ok_or_else(|| FetchError::UnknownImage { path: boot.clone() })?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    Ok((vmlinuz, release))
}

/// The first entry of `dir` whose file name `keep` accepts.
fn first_file(dir: &Path, keep: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
}

/// The `linux-image-<abi>-amd64` that `apt-cache show linux-image-amd64` depends on.
pub fn image_package(show: &str) -> Option<String> {
    let deps = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    deps.split(',')
        .map(|d| d.split_whitespace().next().unwrap_or_default())
        .find(|d| d.starts_with("linux-image-") && *d != "linux-image-amd64")
        .map(str::to_string)
}

/// A Debian archive the system's apt already uses, and the keyring it is signed with.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub uri: String,
    pub signed_by: Option<String>,
}

/// The configured Debian archive, and its security archive when one is configured too.
fn find_mirrors() -> Result<(Mirror, Option<Mirror>), FetchError> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if ext == "list" || ext == "sources" {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push(t);
                }
            }
        }
    }
    let main = texts
        .iter()
        .find_map(|t| mirror_in(t, "/debian"))
        .ok_or(FetchError::NoMirror)?;
    let security = texts.iter().find_map(|t| mirror_in(t, "/debian-security"));
    Ok((main, security))
}

/// The first archive whose path ends in `suffix` (`/debian`, `/debian-security`) in a one-line or
/// deb822 sources file.
pub fn mirror_in(text: &str, suffix: &str) -> Option<Mirror> {
    let is_archive = |uri: &str| uri.trim_end_matches('/').ends_with(suffix);
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut signed_by = None;
        let rest = if let Some(r) = rest.strip_prefix('[') {
            let (opts, r) = r.split_once(']')?;
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            r
        } else {
            rest
        };
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            if is_archive(uri) && !suite.contains('/') {
                return Some(Mirror {
                    uri: uri.into(),
                    signed_by,
                });
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let plain_suite = suites.split_whitespace().any(|s| !s.contains('/'));
        if let Some(uri) = uris.split_whitespace().find(|u| is_archive(u)) {
            if plain_suite {
                return Some(Mirror {
                    uri: uri.into(),
                    signed_by: field("Signed-By").filter(|s| s.starts_with('/')),
                });
            }
        }
    }
    None
}

/// A private apt state: one sources list, lists and caches of its own.
struct AptDir {
    opts: Vec<String>,
}

impl AptDir {
    /// The suite and, when the system has a security archive, `<suite>-security`: the kernel an
    /// up-to-date system of that release runs (security fixes reach the suite only at point
    /// releases).
    fn new(
        dir: &Path,
        suite: &str,
        mirror: &Mirror,
        security: Option<&Mirror>,
    ) -> Result<AptDir, FetchError> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let list = dir.join("sources.list");
        let line = |m: &Mirror, suite: &str| {
            let opt = m
                .signed_by
                .as_ref()
                .map(|k| format!("[signed-by={k}] "))
                .unwrap_or_default();
            format!("deb {opt}{} {suite} main\n", m.uri)
        };
        let mut text = line(mirror, suite);
        if let Some(sec) = security {
            text.push_str(&line(sec, &format!("{suite}-security")));
        }
        std::fs::write(&list, text).map_err(io(&list))?;
        let d = dir.display();
        Ok(AptDir {
            opts: vec![
                format!("Dir::Etc::SourceList={}", list.display()),
                "Dir::Etc::SourceParts=/nonexistent".into(),
                format!("Dir::State::Lists={d}/lists"),
                format!("Dir::Cache={d}/cache"),
                // Files land in our own directory; apt's _apt sandbox user may not write there.
                "APT::Sandbox::User=root".into(),
            ],
        })
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c.args(args);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<String, FetchError> {
        output(
            self.command(tool, args),
            &format!("{tool} {}", args.join(" ")),
        )
    }

    fn run_in(&self, dir: &Path, tool: &str, args: &[&str]) -> Result<String, FetchError> {
        let mut c = self.command(tool, args);
        c.current_dir(dir);
        output(c, &format!("{tool} {}", args.join(" ")))
    }
}

fn output(mut c: Command, what: &str) -> Result<String, FetchError> {
    let out = c.output().map_err(|e| FetchError::Tool {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(FetchError::Tool {
            what: what.into(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn shell(script: &str, what: &str) -> Result<String, FetchError> {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    output(c, what)
}

/// Cuts the xz stream out of a bzImage and decompresses it (`xz --single-stream` ignores what
/// follows the stream), writing an ELF vmlinux to `out`.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), FetchError> {
    let data = std::fs::read(bzimage).map_err(io(bzimage))?;
    let at = data
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| FetchError::NotXz {
            path: bzimage.into(),
        })?;
    let tmp = out.with_extension("partial");
    {
        use std::io::Write;
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut child = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(std::process::Stdio::piped())
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| FetchError::Tool {
                what: "xz -dc".into(),
                detail: e.to_string(),
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        // xz may stop reading after the stream ends: a broken pipe here is fine.
        let _ = stdin.write_all(&data[at..]);
        drop(stdin);
        let _ = child.wait();
    }
    if !read_head(&tmp)?.starts_with(b"\x7fELF") {
        let _ = std::fs::remove_file(&tmp);
        return Err(FetchError::NotXz {
            path: bzimage.into(),
        });
    }
    std::fs::rename(&tmp, out).map_err(io(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_skips_security_and_keeps_keyring() {
        let t = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                 Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in(t, "/debian"),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            })
        );
        let sec_only =
            "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_in(sec_only, "/debian"), None);
        assert_eq!(
            mirror_in(sec_only, "/debian-security").map(|m| m.uri),
            Some("http://m.example/debian-security".into())
        );
    }

    #[test]
    fn mirror_from_one_line_format() {
        let t = "# comment\ndeb http://m.example/debian-security bookworm-security main\n\
                 deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(t, "/debian"),
            Some(Mirror {
                uri: "http://m.example/debian/".into(),
                signed_by: Some("/k.gpg".into()),
            })
        );
        assert_eq!(
            mirror_in("deb https://other.example/apt stable main\n", "/debian"),
            None
        );
    }

    #[test]
    fn image_package_from_the_metapackage() {
        let show = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+1)\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-1)\nDescription: x\n";
        assert_eq!(
            image_package(show).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let unsigned = "Depends: linux-image-5.10.0-32-amd64-unsigned (= 5.10.223-1) | linux-image-5.10.0-32-amd64\n";
        assert_eq!(
            image_package(unsigned).as_deref(),
            Some("linux-image-5.10.0-32-amd64-unsigned")
        );
        assert_eq!(image_package("Package: x\n"), None);
    }
}
