//! Where a checkpoint's files are: one rule for every command.
//!
//! For a directory, the rule of transformers 5.17 (`modeling_utils._get_resolved_checkpoint_files`
//! for a local folder): `model.safetensors` if it exists, else `model.safetensors.index.json`
//! (its `weight_map` names the shards). A directory with neither keeps `divergence inspect`'s
//! extension: every `*.safetensors` in it, in natural name order. A single `.safetensors` path
//! is that file alone, with `config.json` looked up next to it.
//!
//! Files of the directory that the rule does not read (an index next to `model.safetensors`,
//! a stray `*.safetensors` the index does not name) are listed in [`Layout::ignored`], so that
//! callers can say so instead of silently reading something else than the user expects. A
//! file the rule would read that is not a regular file (a directory, a fifo, a symlink to
//! /dev/zero) is an error, told from its metadata without opening it (opening a fifo blocks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use divergence_names::natural_cmp;
use serde_json::Value;

use crate::error::Error;

/// The single-file checkpoint transformers writes.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index transformers writes.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The config transformers writes.
pub const CONFIG_FILE: &str = "config.json";

/// Which rule chose the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The path was one `.safetensors` file.
    File,
    /// `model.safetensors` in the directory.
    Single,
    /// `model.safetensors.index.json` in the directory.
    Index,
    /// Neither: every `*.safetensors` in the directory.
    AllFiles,
}

/// The shard index: its path and its `weight_map` (tensor name -> file name).
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub path: PathBuf,
    pub weight_map: BTreeMap<String, String>,
}

impl Index {
    /// The index's file name, for messages.
    pub fn file_name(&self) -> String {
        file_name(&self.path)
    }
}

/// A file of the checkpoint directory that the rule does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub path: PathBuf,
    /// Why, as a phrase ("model.safetensors is read instead").
    pub reason: String,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not read: {}", file_name(&self.path), self.reason)
    }
}

/// Where a checkpoint's files are.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The directory of the checkpoint (the parent of a single-file path).
    pub dir: PathBuf,
    /// `config.json` (not checked to exist: [`crate::Config::load`] does).
    pub config: PathBuf,
    pub source: Source,
    /// The safetensors files to read, in reading order.
    pub shards: Vec<PathBuf>,
    /// The shard index, when [`Source::Index`].
    pub index: Option<Index>,
    /// Files of the directory that are not read, and why.
    pub ignored: Vec<Ignored>,
}

/// The last component of `path`, or the whole path.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("safetensors")
}

/// What a file that is not a regular file is, for messages ("a named pipe (fifo)"); `diff
/// --map` says it of a map file too.
pub fn file_kind(path: &Path, t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            // A shell's pipe reached through `/dev/stdout` or `/proc/self/fd/N`: its link
            // reads `pipe:[N]` (a bad-input hunt: `run --out /dev/stdout | cat` was said to be
            // a named pipe).
            return match anonymous_pipe(path) {
                true => "a pipe",
                false => "a named pipe (fifo)",
            };
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Whether `path` leads, through its links, to an anonymous pipe (a link that reads `pipe:[N]`,
/// as `/proc/self/fd/N` of a shell's pipe does). Links followed 40 deep at most.
#[cfg(unix)]
fn anonymous_pipe(path: &Path) -> bool {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&p) else {
            return false;
        };
        if target.to_str().is_some_and(|t| t.starts_with("pipe:[")) {
            return true;
        }
        p = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    false
}

/// Whether `path` is a regular file (following symlinks), from its metadata alone: `false`
/// if it does not exist, an error if it is something else (a directory, a fifo, a device) or
/// cannot be examined. Never opens it: opening a fifo blocks.
pub(crate) fn is_regular(path: &Path) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) => Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(path, &meta.file_type()),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(Error::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// What the path given is: one `.safetensors` file, or a directory.
enum Kind {
    File { dir: PathBuf },
    Dir,
}

fn classify(path: &Path) -> Result<Kind, Error> {
    let meta = std::fs::metadata(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                error,
            }
        }
    })?;
    if meta.is_dir() {
        return Ok(Kind::Dir);
    }
    if !meta.is_file() || !is_safetensors(path) {
        return Err(Error::NotAModel {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Kind::File { dir })
}

impl Layout {
    /// The `config.json` of the checkpoint at `path` (in the directory, or next to the
    /// `.safetensors` file), without looking for weights: so that callers can read the config
    /// first and report a broken config.json before missing weights (not checked to exist).
    pub fn config_path(path: &Path) -> Result<PathBuf, Error> {
        Ok(match classify(path)? {
            Kind::File { dir } => dir.join(CONFIG_FILE),
            Kind::Dir => path.join(CONFIG_FILE),
        })
    }

    /// Finds the files of the checkpoint at `path` (a directory or one `.safetensors` file).
    pub fn locate(path: &Path) -> Result<Layout, Error> {
        if let Kind::File { dir } = classify(path)? {
            return Ok(Layout {
                config: dir.join(CONFIG_FILE),
                dir,
                source: Source::File,
                shards: vec![path.to_path_buf()],
                index: None,
                ignored: Vec::new(),
            });
        }
        let dir = path.to_path_buf();
        let all = list_safetensors(&dir)?;
        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        // A file the rule would read that is a directory, a fifo or a device is an error,
        // never skipped for the next rule.
        let (source, shards, index) = if is_regular(&single)? {
            (Source::Single, vec![single], None)
        } else if is_regular(&index_path)? {
            let index = read_index(&index_path)?;
            let mut files: Vec<&String> = index.weight_map.values().collect();
            files.sort_by(|a, b| natural_cmp(a, b));
            files.dedup();
            let mut shards = Vec::with_capacity(files.len());
            for file in files {
                let shard = dir.join(file);
                match is_regular(&shard) {
                    Ok(true) => shards.push(shard),
                    Ok(false) => {
                        return Err(Error::MissingShard {
                            index: index_path,
                            shard: file.clone(),
                        })
                    }
                    Err(Error::NotRegularFile { kind, .. }) => {
                        return Err(Error::ShardNotRegularFile {
                            index: index_path,
                            shard: file.clone(),
                            kind,
                        })
                    }
                    Err(other) => return Err(other),
                }
            }
            if shards.is_empty() {
                return Err(Error::BadJson {
                    path: index_path,
                    message: "weight_map is empty".to_string(),
                });
            }
            (Source::Index, shards, Some(index))
        } else if let Some((path, kind)) = all.iter().find_map(|(p, k)| k.map(|k| (p, k))) {
            // Every `*.safetensors` would be read, this one too.
            return Err(Error::NotRegularFile {
                path: path.clone(),
                kind,
            });
        } else if all.is_empty() {
            return Err(Error::NoSafetensors { path: dir });
        } else {
            let files = all.iter().map(|(p, _)| p.clone()).collect();
            (Source::AllFiles, files, None)
        };

        let mut ignored = Vec::new();
        if source == Source::Single && index_path.is_file() {
            ignored.push(Ignored {
                path: index_path,
                reason: format!(
                    "{SINGLE_FILE} is read instead (transformers reads {SINGLE_FILE} first)"
                ),
            });
        }
        let read_instead = match source {
            Source::Single => format!("only {SINGLE_FILE} is read"),
            _ => format!("{INDEX_FILE} does not name it"),
        };
        // Looked up in a set: a `contains` on the shard list per file took 40,000 shards 54 s
        // (a bad-input hunt, 2026-12-04).
        let read: std::collections::HashSet<&PathBuf> = shards.iter().collect();
        let unread: Vec<PathBuf> = all
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| !read.contains(path))
            .collect();
        ignored.extend(unread.into_iter().map(|path| Ignored {
            path,
            reason: read_instead.clone(),
        }));
        Ok(Layout {
            config: dir.join(CONFIG_FILE),
            dir,
            source,
            shards,
            index,
            ignored,
        })
    }
}

/// Every `*.safetensors` entry of `dir` that exists (following symlinks), in natural name
/// order, with what it is when it is not a regular file (a directory, a fifo, a device: told
/// from its metadata, never opened).
fn list_safetensors(dir: &Path) -> Result<Vec<(PathBuf, Option<&'static str>)>, Error> {
    let io = |error| Error::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if !is_safetensors(&p) {
            continue;
        }
        // A dangling symlink (or one that cannot be examined) is left out, as before.
        if let Ok(meta) = std::fs::metadata(&p) {
            let kind = (!meta.is_file()).then(|| file_kind(&p, &meta.file_type()));
            out.push((p, kind));
        }
    }
    out.sort_by(|(a, _), (b, _)| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(out)
}

/// Largest `model.safetensors.index.json` read: 64 MiB (a real one lists a line a tensor, tens
/// of bytes each: a few MB for the largest checkpoints).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Most JSON items ([`divergence_names::json::counts`]) an index may hold, counted before it is
/// parsed: two a tensor for as many tensors as a shard may hold, and 65,536 for its metadata. A
/// 98 MB index of one list of zeros took 1.7 GB in `inspect`, `run` and `diff --model` (a
/// bad-input hunt, 2026-12-04, session 31).
pub const MAX_INDEX_ITEMS: usize = 2 * divergence_names::json::MAX_TENSORS + (1 << 16);

/// The bytes of the file `path`, at most `max` of them read: past it, an error that it is
/// larger than `max` bytes and so not `what` (config.json, the shard index).
pub(crate) fn read_capped(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let io = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(Error::BadJson {
            path: path.to_path_buf(),
            message: format!("larger than {max} bytes: not {what}"),
        });
    }
    Ok(bytes)
}

/// Reads `model.safetensors.index.json`: its `weight_map`, whose files must be plain names in
/// the checkpoint directory. Held to [`MAX_INDEX_BYTES`] and [`MAX_INDEX_ITEMS`] before it is
/// parsed.
fn read_index(path: &Path) -> Result<Index, Error> {
    let bytes = read_capped(path, MAX_INDEX_BYTES, "a shard index")?;
    let bad = |message: String| Error::BadJson {
        path: path.to_path_buf(),
        message,
    };
    let items = divergence_names::json::counts(&bytes).items;
    if items > MAX_INDEX_ITEMS {
        return Err(bad(format!(
            "holds {items} json items (list elements and object fields), more than the {MAX_INDEX_ITEMS} allowed"
        )));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no weight_map object".to_string()))?;
    let mut weight_map = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name:?}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
            return Err(bad(format!(
                "weight_map[{name:?}] = {file:?} is not a file name in this directory"
            )));
        }
        weight_map.insert(name.clone(), file.to_string());
    }
    Ok(Index {
        path: path.to_path_buf(),
        weight_map,
    })
}
