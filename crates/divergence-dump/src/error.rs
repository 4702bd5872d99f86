//! The one error type of this crate, [`DumpError`].
//!
//! Every message is a single lowercase line that starts with the file path and says what is
//! wrong, with no trailing period (`ref.npz: entry 'a.npy': object arrays (pickles) are not
//! supported`). Errors are `Clone` so that a problem found in one entry while opening a dump can
//! be stored and handed out again by every `read` of that entry.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::DType;

/// Where an error happened: a file, and optionally an entry (a zip member such as `a.npy`, or a
/// tensor name in a safetensors file) inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Shared by every entry of one dump (a decode dump has tens of thousands).
    pub path: Arc<Path>,
    /// The member (an npz member's name, `x.npy`); shared by the steps of a stacked member.
    pub entry: Option<Arc<str>>,
}

impl Location {
    pub(crate) fn file(path: &Path) -> Location {
        Location {
            path: Arc::from(path),
            entry: None,
        }
    }

    pub(crate) fn entry(path: &Path, entry: &str) -> Location {
        Location::in_file(&Arc::from(path), entry)
    }

    /// An entry of the file `path`, sharing it.
    pub(crate) fn in_file(path: &Arc<Path>, entry: &str) -> Location {
        Location {
            path: Arc::clone(path),
            entry: Some(Arc::from(entry)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(entry) = &self.entry {
            write!(f, ": entry '{}'", OneLine(entry))?;
        }
        Ok(())
    }
}

/// Everything that can go wrong while reading or writing a dump.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },

    #[error("{}: is a directory, not a dump file", path.display())]
    IsDirectory { path: PathBuf },

    #[error("{}: empty file (0 bytes), not a dump", path.display())]
    EmptyFile { path: PathBuf },

    /// A FIFO, a device (`/dev/zero`), a socket: never read, not even opened.
    #[error("{}: not a regular file ({kind}), not a dump", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// An operating-system error; `message` is the lowercased text of the `io::Error`.
    #[error("{}: {}", path.display(), OneLine(message))]
    Io {
        path: PathBuf,
        kind: io::ErrorKind,
        message: String,
    },

    #[error("{}: not a zip archive (a .npz must be a zip file written by numpy.savez)", path.display())]
    NotZip { path: PathBuf },

    #[error("{}: truncated zip archive ({})", path.display(), OneLine(detail))]
    TruncatedZip { path: PathBuf, detail: String },

    #[error("{}: corrupt zip archive ({})", path.display(), OneLine(detail))]
    CorruptZip { path: PathBuf, detail: String },

    #[error("{}: unknown file format (not a .npz zip archive, a .npy array or a .safetensors file)", path.display())]
    UnknownFormat { path: PathBuf },

    #[error("{}: invalid safetensors file ({})", path.display(), OneLine(detail))]
    Safetensors { path: PathBuf, detail: String },

    #[error("{}: invalid divergence metadata ({})", path.display(), OneLine(detail))]
    BadMeta { path: PathBuf, detail: String },

    /// Two entries give the same tensor name (`a.npy` and `a`, or `a.npy` twice).
    #[error("{}: duplicate entry '{}' (tensor name '{}' appears twice{})", path.display(), OneLine(entry), OneLine(name), OneLine(held))]
    DuplicateEntry {
        path: PathBuf,
        entry: String,
        name: String,
        /// Empty, or, where either is a decode step of a stacked member (`x@steps`), which
        /// entries hold the name: `: step 1 of entry 'x@steps.npy' and step 1 of entry 'x@steps'`.
        held: String,
    },

    /// More tensors than a dump may hold ([`crate::MAX_ENTRIES`]), counted before they are
    /// read.
    #[error("{}: holds {count} tensors, more than the {max} a dump may hold (decode steps stored stacked, `name@steps`, count as one each: docs/reliability.md, section Caps)", path.display())]
    TooManyTensors {
        path: PathBuf,
        count: usize,
        max: usize,
    },

    #[error("{}: no tensor named '{}'", path.display(), OneLine(name))]
    NoSuchTensor { path: PathBuf, name: String },

    #[error("{at}: corrupt npy header ({})", OneLine(detail))]
    CorruptNpyHeader { at: Location, detail: String },

    #[error("{at}: object arrays (pickles) are not supported")]
    ObjectArray { at: Location },

    #[error("{at}: unsupported dtype '{}' (supported: float64, float32, float16, bfloat16 (safetensors only), int64, int32, int16, int8, uint8, bool)", OneLine(dtype))]
    UnsupportedDtype { at: Location, dtype: String },

    #[error("{at}: shape {shape:?} is too large (its dimensions other than 0 multiply past 2^61 elements, which numpy refuses too)")]
    ShapeTooLarge { at: Location, shape: Vec<u64> },

    /// One dimension does not even fit in 64 bits; `dim` is the number as written.
    #[error(
        "{at}: dimension {} in 'shape' is too large (it overflows 64 bits)",
        OneLine(dim)
    )]
    DimensionTooLarge { at: Location, dim: String },

    #[error("{at}: shape has {dims} dimensions, more than the {max} this reader accepts")]
    TooManyDimensions {
        at: Location,
        dims: usize,
        max: usize,
    },

    #[error("{at}: data is {have} bytes, shape {shape:?} of {dtype} needs {need}")]
    DataSize {
        at: Location,
        have: u64,
        shape: Vec<usize>,
        dtype: DType,
        need: u64,
    },

    /// Deflate data that does not decompress, or a CRC-32 mismatch.
    #[error("{at}: corrupt compressed data ({})", OneLine(detail))]
    CorruptData { at: Location, detail: String },

    /// A zip member whose bytes cannot be located (damaged local header, data past the end).
    #[error("{at}: damaged zip entry ({})", OneLine(detail))]
    DamagedEntry { at: Location, detail: String },

    /// A zip entry this reader cannot handle (encrypted, unknown compression method).
    #[error("{at}: {}", OneLine(detail))]
    UnsupportedEntry { at: Location, detail: String },

    #[error("{at}: cannot allocate {bytes} bytes for the tensor")]
    OutOfMemory { at: Location, bytes: u64 },

    /// The dump's format is told by its name's extension: `/dev/null`, `/proc/self/fd/1` and a
    /// name without one were said to have the wrong extension (a bad-input hunt).
    #[error("{}: {} (use .npz or .safetensors)", path.display(), match path.extension() {
        Some(_) => "cannot write a dump with this extension",
        None => "no extension to tell the dump's format by: the name must end in one",
    })]
    UnsupportedExtension { path: PathBuf },

    #[error("{}: invalid tensor name '{}' ({})", path.display(), OneLine(name), OneLine(reason))]
    InvalidName {
        path: PathBuf,
        name: String,
        reason: String,
    },

    #[error("{}: tensor '{}' was already added (names must be unique)", path.display(), OneLine(name))]
    DuplicateName { path: PathBuf, name: String },

    #[error("{}: tensor '{}': {len} values given, shape {shape:?} needs {need}", path.display(), OneLine(name))]
    DataLength {
        path: PathBuf,
        name: String,
        len: usize,
        shape: Vec<usize>,
        need: String,
    },

    #[error("{}: cannot write dump ({})", path.display(), OneLine(detail))]
    Write { path: PathBuf, detail: String },
}

impl DumpError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        use DumpError::*;
        match self {
            NotFound { path }
            | IsDirectory { path }
            | EmptyFile { path }
            | NotRegularFile { path, .. }
            | Io { path, .. }
            | NotZip { path }
            | TruncatedZip { path, .. }
            | CorruptZip { path, .. }
            | UnknownFormat { path }
            | Safetensors { path, .. }
            | BadMeta { path, .. }
            | DuplicateEntry { path, .. }
            | NoSuchTensor { path, .. }
            | TooManyTensors { path, .. }
            | UnsupportedExtension { path }
            | InvalidName { path, .. }
            | DuplicateName { path, .. }
            | DataLength { path, .. }
            | Write { path, .. } => path,
            CorruptNpyHeader { at, .. }
            | ObjectArray { at }
            | UnsupportedDtype { at, .. }
            | ShapeTooLarge { at, .. }
            | DimensionTooLarge { at, .. }
            | TooManyDimensions { at, .. }
            | DataSize { at, .. }
            | CorruptData { at, .. }
            | UnsupportedEntry { at, .. }
            | DamagedEntry { at, .. }
            | OutOfMemory { at, .. } => &at.path,
        }
    }

    /// Map an `io::Error` on `path` to the matching variant, with a lowercase message.
    pub(crate) fn io(path: &Path, err: &io::Error) -> DumpError {
        let path = path.to_path_buf();
        match err.kind() {
            io::ErrorKind::NotFound => DumpError::NotFound { path },
            io::ErrorKind::IsADirectory => DumpError::IsDirectory { path },
            kind => DumpError::Io {
                path,
                kind,
                message: lowercase_first(&err.to_string()),
            },
        }
    }
}

/// Displays a name or detail as [`divergence_names::one_line`] writes it: control characters
/// escaped (`\n`, `\r`, `\u{0}`; and the Unicode line and paragraph separators), and hidden
/// ones (a right-to-left override), which this wrote raw before 2026-12-05. Names come from
/// the file (a zip member may be named `"a\nb.npy"`), and every message is one line.
pub(crate) struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&divergence_names::one_line(self.0))
    }
}

/// `text` on one line (whitespace runs, newlines included, become one space), cut to about
/// `max` characters with `...`: for details that come from other crates (parsers that draw
/// caret diagrams) and for quoting what a file holds.
pub(crate) fn brief(text: &str, max: usize) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        return one;
    }
    let cut: String = one.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

/// `"Permission denied (os error 13)"` -> `"permission denied (os error 13)"`.
pub(crate) fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
