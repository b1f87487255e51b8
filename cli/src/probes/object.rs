//! The eBPF object built from probe-ebpf by build.rs, and the globals set before it loads.
use aya::{Ebpf, EbpfError, EbpfLoader};

/// The object's bytes, embedded in the binary.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kpath"));

/// A global's value, typed as the program declares it (aya checks the size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    U32(u32),
    U64(u64),
}

impl From<bool> for Global {
    fn from(b: bool) -> Self {
        Global::U32(u32::from(b))
    }
}

/// aya's loader, made on a thread of its own: making one parses the kernel's BTF (~35 ms
/// here), which overlaps kpath's own feature detection when started first.
pub struct Loader(std::thread::JoinHandle<EbpfLoader<'static>>);

impl Loader {
    pub fn start() -> Loader {
        Loader(std::thread::spawn(EbpfLoader::new))
    }
}

/// Loads the object with every global set (each must exist in the object) and the given maps
/// resized.
pub fn load(
    loader: Loader,
    globals: &[(&'static str, Global)],
    max_entries: &[(&'static str, u32)],
) -> Result<Ebpf, EbpfError> {
    let t0 = std::time::Instant::now();
    // A loader thread that panicked gave nothing: make one here.
    let mut loader = loader.0.join().unwrap_or_else(|_| EbpfLoader::new());
    log::debug!("start-up: waited {:?} for aya's loader", t0.elapsed());
    for (name, value) in globals {
        match value {
            Global::U32(v) => loader.override_global(name, v, true),
            Global::U64(v) => loader.override_global(name, v, true),
        };
    }
    for (name, n) in max_entries {
        loader.map_max_entries(name, *n);
    }
    loader.load(OBJECT)
}

/// Names of the object's programs, maps and global symbols, parsed without loading anything
/// (for checking names without privileges).
#[derive(Debug, Default)]
pub struct Names {
    pub programs: Vec<String>,
    pub maps: Vec<String>,
    pub globals: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("aya-obj cannot parse the embedded eBPF object")]
    Aya(#[source] aya_obj::ParseError),
    #[error("the embedded eBPF object is not a readable ELF file")]
    Elf(#[source] object::Error),
}

/// Parses [`OBJECT`]: programs and maps as aya-obj names them (aya loads by these names),
/// globals from the ELF symbol table (aya-obj keeps its own private).
pub fn names() -> Result<Names, NamesError> {
    use object::{Object as _, ObjectSymbol as _};
    let obj = aya_obj::Object::parse(OBJECT).map_err(NamesError::Aya)?;
    let elf = object::File::parse(OBJECT).map_err(NamesError::Elf)?;
    let mut n = Names {
        programs: obj.programs.keys().cloned().collect(),
        maps: obj.maps.keys().cloned().collect(),
        globals: elf
            .symbols()
            .filter(|s| s.is_global() && s.kind() == object::SymbolKind::Data)
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect(),
    };
    n.programs.sort();
    n.maps.sort();
    n.globals.sort();
    n.globals.dedup();
    Ok(n)
}
