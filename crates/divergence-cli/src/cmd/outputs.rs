//! The files a command writes must not be the files it reads: `diff --json-out ours.npz`
//! would replace a dump with its own report (found by a bad-input hunt: the next run failed on
//! it), and two outputs given one file would keep only the last written; nor may an output be
//! a folder or lie in a folder that is missing; nor may `run --out` replace a dump written by
//! transformers (a reference). Checked before anything else is read or written.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Refuses an output (`(flag, path)`) that is one of the `inputs` (`(what, path)`) or the
/// file of another output. Two paths are one file when they resolve to the same place
/// (relative paths, `..`, symlinks) or, both existing, share device and inode (hard links).
/// An output that does not exist yet is its folder's entry of that name. A path that exists
/// and is not a regular file (`/dev/null`, a terminal's `/dev/stdout`) is never refused: it
/// holds nothing to lose.
pub fn check(outputs: &[(&str, Option<&Path>)], inputs: &[(&str, &Path)]) -> Result<()> {
    let label = |p: &Path| divergence_names::one_line(&p.display().to_string()).into_owned();
    let outputs: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|&(flag, p)| Some((flag, p?)))
        .collect();
    for (i, &(flag, out)) in outputs.iter().enumerate() {
        // Before the comparison, not after it (a newcomer's check: `--json-out
        // artifacts/r.json` without `artifacts/` compared everything, then failed with "cannot
        // create: No such file or directory").
        if let Some(problem) = no_place_for(out, &label) {
            bail!("{flag} {}: {problem}", label(out));
        }
        if let Some((what, input)) = inputs.iter().find(|(_, input)| same_file(out, input)) {
            bail!(
                "{flag} {}: that is the {what} file this command reads ({}); write it elsewhere",
                label(out),
                label(input)
            );
        }
        if let Some((other, path)) = outputs[i + 1..].iter().find(|(_, o)| same_file(out, o)) {
            bail!(
                "{flag} {} and {other} {} are one file: give each output a file of its own",
                label(out),
                label(path)
            );
        }
    }
    Ok(())
}

/// Refuses an output of `diff` that is its standard output, where the report itself is
/// printed: `--json-out /dev/stdout` piped two JSON documents one after the other, and `-`
/// was written as a file named `-` (a bad-input hunt). The report on standard output is
/// `--format`'s.
pub fn not_stdout(outputs: &[(&str, Option<&Path>)]) -> Result<()> {
    let label = |p: &Path| divergence_names::one_line(&p.display().to_string()).into_owned();
    // What prints this output on standard output instead, where something does.
    let instead = |flag: &str| match flag {
        "--json-out" => " (--format json prints the report there)",
        "--markdown-out" => " (--format markdown prints the report there)",
        _ => "",
    };
    let stdout = stdout_id();
    for &(flag, out) in outputs {
        let Some(out) = out else { continue };
        if out == Path::new("-") {
            bail!(
                "{flag} -: the standard output carries the report{}; give {flag} a file (./- \
                 for a file named -)",
                instead(flag)
            );
        }
        // The terminal, where the standard output prints the report too: the two
        // interleave on the screen (a review; `/dev/tty` is its own device, not the
        // terminal's, so the device check below does not see it).
        if is_dev_tty(out) && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            bail!(
                "{flag} {}: that is the terminal, where the standard output prints the report{}; \
                 give {flag} a file of its own",
                label(out),
                instead(flag)
            );
        }
        // (`/dev/null` is nobody's output: `--json-out /dev/null > /dev/null` loses nothing.)
        if stdout.is_some() && file_id(out) == stdout && !is_dev_null(out) {
            bail!(
                "{flag} {}: that is the standard output, which carries the report{}; give {flag} \
                 a file of its own",
                label(out),
                instead(flag)
            );
        }
    }
    Ok(())
}

/// Device and inode of what this process's standard output writes to.
fn stdout_id() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        let meta = std::fs::File::from(fd).metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    None
}

/// True when `path` is `/dev/null`, through links.
fn is_dev_null(path: &Path) -> bool {
    resolves_to(path, "/dev/null")
}

/// True when `path` is `/dev/tty` (the process's terminal), through links.
fn is_dev_tty(path: &Path) -> bool {
    resolves_to(path, "/dev/tty")
}

/// True when `path`, through links, is `target`.
fn resolves_to(path: &Path, target: &str) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p == Path::new(target))
}

/// Device and inode of an existing path (its target, through symlinks such as `/dev/stdout`).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Why no file can be written at `out`, where that is plain before anything is read: it is a
/// folder, or it does not exist and its folder is none (missing, not a folder, or not
/// readable). `label` writes a path for a message.
fn no_place_for(out: &Path, label: &dyn Fn(&Path) -> String) -> Option<String> {
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        return meta
            .is_dir()
            .then(|| "it is a folder; give a file name".to_string());
    }
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty())?;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("{} is not a folder", label(dir))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "its folder {} does not exist; create it first (mkdir -p {})",
            label(dir),
            label(dir)
        )),
        Err(e) => Some(format!("its folder {} cannot be read: {e}", label(dir))),
    }
}

/// Most entries of a `--model` folder listed where its layout cannot be read ([`model_files`]).
const MAX_MODEL_ENTRIES: usize = 10_000;

/// The files of a `--model` checkpoint that a command reads, to pass to [`check`] as inputs:
/// config.json, the index and the shards, as the loader finds them
/// ([`divergence_checkpoint::Layout::locate`]); where it cannot, config.json and every
/// `*.safetensors` and `*.json` of the folder. Other files of the folder (a dump an earlier run
/// wrote there) are not inputs: a rerun may overwrite them. `diff --html-out
/// DIR/model.safetensors --model DIR` replaced the weights with the page (found by a bad-input
/// hunt).
pub fn model_files(model: &Path) -> Vec<PathBuf> {
    if let Ok(layout) = divergence_checkpoint::Layout::locate(model) {
        let mut files = vec![layout.config];
        files.extend(layout.index.map(|i| i.path));
        files.extend(layout.shards);
        return files;
    }
    let Ok(entries) = std::fs::read_dir(model) else {
        return vec![model.join("config.json")];
    };
    let mut files = vec![model.join("config.json")];
    files.extend(
        entries
            .take(MAX_MODEL_ENTRIES)
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("safetensors" | "json")
                )
            }),
    );
    files
}

/// Refuses a dump output (`run --out`) that exists and is not a regular file, but for
/// `/dev/null`: an npz is written with seeks, so a FIFO waited for a reader forever and then
/// failed ("Illegal seek"), and a device is no place for a dump; and a regular file that is a
/// dump written by transformers (`producer.name` `transformers...`), opened to read its
/// metadata (its index only, no tensor: ~0.1 s for a dump of 150,000 members).
pub fn check_dump_output(flag: &str, out: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(());
    };
    if meta.is_file() {
        // A reference exported by transformers is not replaced by a run of ours (a
        // newcomer's run: `--out fixtures/demo/ref.npz` replaced the committed reference,
        // exit 0). A file that does not open as a dump is read for its producer's name as
        // plain bytes (a hunt: metadata the reader refuses, a member cut short, replaced
        // without a word); one that names none is the writer's to replace (a run of ours cut
        // short, say).
        let producer = match divergence_dump::Dump::open(out) {
            Ok(d) => d
                .meta()
                .and_then(|m| m.producer_str("name"))
                .map(str::to_string),
            Err(_) => match raw_producer_is_transformers(out) {
                Ok(found) => found.then(|| "transformers".to_string()),
                // (a hunt: a file that may not be read, `chmod 222`, was replaced unread)
                Err(e) => bail!(
                    "{flag} {}: it cannot be read to check whether it holds a reference dump ({e}): write elsewhere, or remove it first",
                    divergence_names::one_line(&out.display().to_string())
                ),
            },
        };
        if let Some(name) = producer.filter(|n| n.starts_with("transformers")) {
            bail!(
                "{flag} {}: it holds a dump written by transformers (producer.name '{}', a reference), which this run would replace: write elsewhere, or remove it first",
                divergence_names::one_line(&out.display().to_string()),
                divergence_names::one_line(&name)
            );
        }
        return Ok(());
    }
    if meta.is_dir() || is_dev_null(out) {
        // A folder is the writer's own error, with its path.
        return Ok(());
    }
    bail!(
        "{flag} {}: it is {}, not a regular file: a dump is written as a file (npz and \
         safetensors are written with seeks)",
        divergence_names::one_line(&out.display().to_string()),
        divergence_checkpoint::file_kind(out, &meta.file_type())
    )
}

/// Whether `path` names transformers as a dump's producer, read as bytes (`"producer":
/// {"name": "transformers...`, or the same escaped inside a JSON string, as a safetensors
/// header holds its metadata: `\"producer\"`): the metadata of a file that does not open as
/// a dump, where the exporter writes it (an npz's stored `__meta__` member, a safetensors
/// header). Its first and last [`PRODUCER_SPAN`] (the whole of a smaller file), in pieces of
/// a MiB that overlap by [`PRODUCER_WINDOW`] (a hunt: a large per-step reference held it more
/// than a MiB from both ends; a review: reading all of a 2 GiB file took 10 s). Deflated
/// metadata is not read. An error where the file cannot be read.
fn raw_producer_is_transformers(path: &Path) -> std::io::Result<bool> {
    raw_producer_within(path, PRODUCER_SPAN)
}

/// [`raw_producer_is_transformers`] over the first and last `span` bytes.
fn raw_producer_within(path: &Path, span: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let tail = len.saturating_sub(span).max(span.min(len));
    if pieces_name_transformers((&mut file).take(span))? {
        return Ok(true);
    }
    if tail >= len {
        return Ok(false);
    }
    // (From a window before the tail: a name cut at the head's end is whole there too.)
    file.seek(SeekFrom::Start(tail.saturating_sub(PRODUCER_WINDOW as u64)))?;
    pieces_name_transformers(file)
}

/// How much of each end of a file [`raw_producer_is_transformers`] reads: the metadata of a
/// 150,000-probe decode reference (its order and dtypes, ~10 MB) fits many times over.
const PRODUCER_SPAN: u64 = 64 << 20;

/// [`names_transformers`] over everything `reader` gives, in pieces of a MiB, each starting
/// with the last [`PRODUCER_WINDOW`] bytes of the one before (a name cut between two is whole
/// in the second).
fn pieces_name_transformers(mut reader: impl std::io::Read) -> std::io::Result<bool> {
    const PIECE: usize = 1 << 20;
    let mut buf = vec![0u8; PIECE + PRODUCER_WINDOW];
    let mut kept = 0;
    loop {
        let n = match reader.read(&mut buf[kept..]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = kept + n;
        if names_transformers(&buf[..end]) {
            return Ok(true);
        }
        kept = end.min(PRODUCER_WINDOW);
        buf.copy_within(end - kept..end, 0);
    }
}

/// The bytes [`names_transformers`] reads after `producer`: the pieces of
/// [`raw_producer_is_transformers`] overlap by this much.
const PRODUCER_WINDOW: usize = 512;

/// `producer`, then within 256 bytes `name` and a string starting `transformers`, each quoted
/// plainly or escaped (`\"`, a JSON string inside JSON).
fn names_transformers(bytes: &[u8]) -> bool {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    // A quoted word: `"word"` or `\"word\"`; the index past it.
    let quoted = |hay: &[u8], word: &[u8]| -> Option<usize> {
        let mut from = 0;
        while let Some(at) = find(&hay[from..], word) {
            let (start, end) = (from + at, from + at + word.len());
            let before = &hay[..start];
            let after = &hay[end..];
            let open = before.ends_with(b"\"") || before.ends_with(b"\\\"");
            let close = after.starts_with(b"\"") || after.starts_with(b"\\\"");
            if open && close {
                return Some(end + if after.starts_with(b"\"") { 1 } else { 2 });
            }
            from = end;
        }
        None
    };
    let mut rest = bytes;
    while let Some(at) = quoted(rest, b"producer") {
        let after = &rest[at..];
        let window = &after[..after.len().min(256)];
        if let Some(n) = quoted(window, b"name") {
            // `: "` or `: \"` (with any spaces), then the value.
            let value: Vec<u8> = window[n..]
                .iter()
                .skip_while(|b| b.is_ascii_whitespace() || matches!(b, b':' | b'"' | b'\\'))
                .copied()
                .take(12)
                .collect();
            if value.as_slice() == b"transformers" {
                return true;
            }
        }
        rest = after;
    }
    false
}

/// What a regular file at `path` already holds where it is a format [`divergence_dump`] reads,
/// by its first bytes: a zip archive (an npz dump is one; so is a `.docx`), an npy array, or a
/// safetensors file (an 8-byte header length within the file, then `{`). `None` for anything
/// else, or a file that cannot be read.
fn dump_kind(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .ok()?
        .take(9)
        .read_to_end(&mut head)
        .ok()?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Some("a zip archive, as an npz dump is");
    }
    if head.starts_with(b"\x93NUMPY") {
        return Some("an npy array");
    }
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    (head.get(8) == Some(&b'{') && n.checked_add(8).is_some_and(|end| end <= meta.len()))
        .then_some("a safetensors file")
}

/// Refuses a report output of `diff` (`--json-out`, `--markdown-out`, `--html-out`, `--plot`,
/// `--suggest-map`) that already holds a dump: no report is written as npz, npy or
/// safetensors, so the path is a mistake, and writing would lose the dump (a hunt:
/// `--json-out other_ref.npz` replaced a reference that was not one of the inputs, exit 0).
pub fn not_a_dump(outputs: &[(&str, Option<&Path>)]) -> Result<()> {
    for &(flag, out) in outputs {
        let Some(out) = out else { continue };
        if let Some(kind) = dump_kind(out) {
            bail!(
                "{flag} {}: it holds {kind}, which the report would replace: write elsewhere, or remove it first",
                divergence_names::one_line(&out.display().to_string())
            );
        }
    }
    Ok(())
}

/// How long [`create`] waits for a process to open a pipe for reading: a reader started just
/// after `divergence` (`divergence diff ... --json-out f & cat f`, or a `cat f g` that opens
/// `g` once `f` ends) comes within it.
pub const PIPE_READER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens an output for writing (`File::create`), but a pipe no process reads is an error after
/// [`PIPE_READER_WAIT`], not a wait without end: opening a FIFO for writing blocks until a
/// process opens it for reading, so `diff --json-out fifo` with nothing reading it hung after
/// the comparison, without a word (a case the bad-input hunts had left open). The output is
/// opened without blocking (`ENXIO` while no process reads a named pipe; tried again every 20
/// ms), then its writes block as they would: a pipe with a reader (`--json-out >(jq .)`, a
/// FIFO a `cat` holds open) gets the report as before. (A shell's pipe whose reader is gone is
/// no wait: the kernel opens it, and the first write fails, `Broken pipe`.)
pub fn create(flag: &str, path: &Path) -> Result<std::fs::File> {
    let label = || divergence_names::one_line(&path.display().to_string()).into_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created and truncated in the one call (a FIFO swapped for a file between a check and
        // the open kept the file's old bytes); a FIFO another user owns in a sticky folder
        // (`fs.protected_fifos`) refuses O_CREAT, and is opened again without it.
        let open = |create: bool| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(create)
                .truncate(create)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
        };
        let start = std::time::Instant::now();
        let mut create = true;
        let file = loop {
            match open(create) {
                Ok(file) => break file,
                Err(e) if create && e.raw_os_error() == Some(libc::EACCES) && is_fifo(path) => {
                    create = false;
                }
                // (only a named pipe says ENXIO for no reader; a device without its hardware
                // says it too, and is said as it is)
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && is_fifo(path) => {
                    if start.elapsed() < PIPE_READER_WAIT {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    bail!(
                        "{flag} {}: a named pipe (fifo) that no process opened for reading in {} \
                         s: start its reader first (`cat {} &`); nothing was written",
                        label(),
                        PIPE_READER_WAIT.as_secs(),
                        label()
                    )
                }
                // A file under a lease (a network share) says EAGAIN to a non-blocking open:
                // opened as File::create does, waiting for the lease.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && !is_fifo(path) => {
                    break std::fs::File::create(path)
                        .with_context(|| format!("{flag} {}: cannot create", label()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{flag} {}: cannot create", label()))
                }
            }
        };
        blocking(&file).with_context(|| format!("{flag} {}: cannot write", label()))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    std::fs::File::create(path).with_context(|| format!("{flag} {}: cannot create", label()))
}

/// Whether `path` is a named pipe.
#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Clears `O_NONBLOCK` on `file`: a reader slower than the writer makes a write wait, as a
/// pipe's writes do, instead of failing with `EAGAIN`.
#[cfg(unix)]
fn blocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open for as long as `file` lives; F_GETFL / F_SETFL read and set its
    // status flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `a` and `b` are one regular file (or would be, once written): see [`check`].
pub fn same_file(a: &Path, b: &Path) -> bool {
    let special = |p: &Path| std::fs::metadata(p).is_ok_and(|m| !m.is_file());
    if special(a) || special(b) {
        return false;
    }
    if let (Some(x), Some(y)) = (file_id(a), file_id(b)) {
        return x == y;
    }
    match (resolved(a), resolved(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `p` with its folder resolved (relative parts, `..`, symlinks); for a file that does not
/// exist yet, its resolved folder's entry of that name, and for a symlink to such a file (a
/// dangling one), its target's (a bad-input hunt: `--json-out link.md --markdown-out x.md`,
/// `link.md` -> `x.md` not written yet, wrote both to `x.md`). Links followed 40 deep at most.
fn resolved(p: &Path) -> Option<PathBuf> {
    let mut p = p.to_path_buf();
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&p) {
            return Some(real);
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::read_link(&p) {
            // a dangling link: where its target would be created
            Ok(target) => p = dir.join(target),
            Err(_) => return Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_under_any_name_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dump = d.join("ours.npz");
        std::fs::write(&dump, b"dump").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        // another spelling, a symlink, a hard link
        assert!(same_file(&dump, &d.join("sub/../ours.npz")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&dump, d.join("link.npz")).unwrap();
            assert!(same_file(&d.join("link.npz"), &dump));
        }
        std::fs::hard_link(&dump, d.join("hard.npz")).unwrap();
        assert!(same_file(&d.join("hard.npz"), &dump));
        // files not written yet: one name, two spellings
        assert!(same_file(&d.join("r.json"), &d.join("sub/../r.json")));
        // a dangling symlink is the file it would create, through links of links and a
        // relative target
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("r.md", d.join("a.md")).unwrap();
            std::os::unix::fs::symlink("../a.md", d.join("sub/b.md")).unwrap();
            assert!(same_file(&d.join("a.md"), &d.join("r.md")));
            assert!(same_file(&d.join("sub/b.md"), &d.join("r.md")));
            assert!(!same_file(&d.join("sub/b.md"), &d.join("s.md")));
            // a loop resolves to nothing, and is no other file
            std::os::unix::fs::symlink("loop2", d.join("loop1")).unwrap();
            std::os::unix::fs::symlink("loop1", d.join("loop2")).unwrap();
            assert!(!same_file(&d.join("loop1"), &d.join("r.md")));
        }
        assert!(!same_file(&d.join("r.json"), &d.join("s.json")));
        assert!(!same_file(&dump, &d.join("other.npz")));
        // nothing to lose
        assert!(!same_file(Path::new("/dev/null"), Path::new("/dev/null")));
    }

    #[test]
    fn an_output_may_be_no_input_and_no_other_output() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("ours.npz");
        std::fs::write(&dump, b"dump").unwrap();
        let json = dir.path().join("r.json");
        let inputs = [("OURS", dump.as_path())];
        let e = check(&[("--json-out", Some(&dump))], &inputs).unwrap_err();
        assert!(
            e.to_string().contains("--json-out") && e.to_string().contains("the OURS file"),
            "{e}"
        );
        let e = check(
            &[("--json-out", Some(&json)), ("--html-out", Some(&json))],
            &inputs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("are one file"), "{e}");
        assert!(check(&[("--json-out", Some(&json)), ("--plot", None)], &inputs).is_ok());
        // an output whose folder does not exist, said before anything is read
        let nowhere = dir.path().join("artifacts/r.json");
        let e = check(&[("--json-out", Some(&nowhere))], &inputs).unwrap_err();
        assert!(
            e.to_string().contains("artifacts does not exist")
                && e.to_string().contains("mkdir -p"),
            "{e}"
        );
        assert!(check(&[("--json-out", Some(Path::new("r.json")))], &inputs).is_ok());
        let under_a_file = dump.join("r.json");
        let e = check(&[("--json-out", Some(&under_a_file))], &inputs).unwrap_err();
        assert!(e.to_string().ends_with("ours.npz is not a folder"), "{e}");
        let e = check(&[("--json-out", Some(dir.path()))], &inputs).unwrap_err();
        assert!(
            e.to_string().ends_with("it is a folder; give a file name"),
            "{e}"
        );
        let null = Path::new("/dev/null");
        assert!(check(
            &[("--json-out", Some(null)), ("--html-out", Some(null))],
            &inputs
        )
        .is_ok());
    }

    /// The checkpoint's own files are inputs; anything else in its folder (an earlier run's
    /// dump) is not, so that a rerun may overwrite it (a review found the rerun refused).
    #[test]
    fn a_models_inputs_are_the_files_its_loader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        std::fs::write(m.join("config.json"), b"{}").unwrap();
        std::fs::write(m.join("model.safetensors"), b"x").unwrap();
        std::fs::write(m.join("ours.npz"), b"dump").unwrap();
        let files = model_files(m);
        assert!(files.contains(&m.join("config.json")), "{files:?}");
        assert!(files.contains(&m.join("model.safetensors")), "{files:?}");
        assert!(!files.contains(&m.join("ours.npz")), "{files:?}");
        let inputs: Vec<(&str, &Path)> = files.iter().map(|p| ("--model", p.as_path())).collect();
        assert!(check(&[("--out", Some(&m.join("ours.npz")))], &inputs).is_ok());
        let e = check(&[("--out", Some(&m.join("model.safetensors")))], &inputs).unwrap_err();
        assert!(e.to_string().contains("the --model file"), "{e}");
        // A folder whose layout cannot be read: config.json and its safetensors/JSON files.
        let bare = dir.path().join("bare");
        std::fs::create_dir(&bare).unwrap();
        std::fs::write(bare.join("a.json"), b"{}").unwrap();
        std::fs::write(bare.join("notes.txt"), b"").unwrap();
        let files = model_files(&bare);
        assert!(files.contains(&bare.join("a.json")), "{files:?}");
        assert!(!files.contains(&bare.join("notes.txt")), "{files:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_dump_goes_to_a_regular_file_or_dev_null() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("null.npz");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert!(check_dump_output("--out", &link).is_ok());
        assert!(check_dump_output("--out", Path::new("/dev/null")).is_ok());
        assert!(check_dump_output("--out", &dir.path().join("new.npz")).is_ok());
        let full = dir.path().join("full.npz");
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let e = check_dump_output("--out", &full).unwrap_err().to_string();
        assert!(e.contains("a character device"), "{e}");
    }

    /// A reference exported by transformers is not replaced by a run; a run of ours, a file
    /// that is no dump, and a dump without metadata are.
    #[test]
    fn a_run_does_not_replace_a_reference_dump() {
        use divergence_dump::{DumpWriter, Meta, TensorData};
        let dir = tempfile::tempdir().unwrap();
        let dump = |name: &str, producer: Option<&str>| {
            let path = dir.path().join(name);
            let mut w = DumpWriter::create(&path).unwrap();
            w.add("x", &[1], TensorData::F32(&[1.0])).unwrap();
            w.finish(Meta {
                producer: producer.map(|p| serde_json::json!({ "name": p })),
                ..Meta::default()
            })
            .unwrap();
            path
        };
        for name in ["transformers", "transformers+planted-bug"] {
            let reference = dump("ref.npz", Some(name));
            let e = check_dump_output("--out", &reference)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("it holds a dump written by transformers")
                    && e.contains(name)
                    && !e.contains('\n'),
                "{e}"
            );
        }
        for path in [
            dump("ours.npz", Some("divergence-qwen3")),
            dump("bare.npz", None),
        ] {
            assert!(check_dump_output("--out", &path).is_ok());
        }
        let text = dir.path().join("notes.npz");
        std::fs::write(&text, b"not a dump").unwrap();
        assert!(check_dump_output("--out", &text).is_ok());
        // A file that does not open as a dump but names transformers as its producer in
        // plain bytes (metadata the reader refuses, a hunt) is not replaced either.
        let odd = dir.path().join("odd.npz");
        let mut bytes = b"PK\x03\x04 cut short ".to_vec();
        bytes.extend_from_slice(br#"{"format": 9, "producer": {"name":  "transformers", "x": 1}}"#);
        std::fs::write(&odd, &bytes).unwrap();
        let e = check_dump_output("--out", &odd).unwrap_err().to_string();
        assert!(e.contains("it holds a dump written by transformers"), "{e}");
    }

    #[test]
    fn a_producer_named_in_plain_bytes() {
        for yes in [
            &br#"{"producer": {"name": "transformers"}}"#[..],
            br#"..."producer":{"torch":"2","name":"transformers+planted-bug"}"#,
        ] {
            assert!(names_transformers(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &br#"{"producer": {"name": "divergence-qwen3"}}"#[..],
            br#"{"name": "transformers"}"#,
            br#"{"producer": {"name": "Transformers"}}"#,
            br#"{"producer": "#,
            b"",
            br#"{\"producer\": {\"name\": \"divergence-qwen3\"}}"#,
        ] {
            assert!(!names_transformers(no), "{}", String::from_utf8_lossy(no));
        }
        // Escaped, as a safetensors header holds the metadata: a JSON string inside JSON (a
        // hunt: such a file that did not open as a dump was replaced).
        let escaped = br#"{"__metadata__":{"divergence":"{\"format\": \"divergence-dump/2\", \"producer\": {\"name\": \"transformers\"}}"}}"#;
        assert!(names_transformers(escaped));
    }

    #[test]
    fn a_producer_anywhere_in_a_large_file_or_an_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let name = br#""producer": {"name": "transformers"}"#;
        // past the first and before the last MiB, cut by the first piece's end (it holds a
        // MiB and the window: only the overlap sees it whole; a review)
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.resize((1 << 20) + PRODUCER_WINDOW - 10, b'x');
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len() + (3 << 20), b'y');
        let big = dir.path().join("big.npz");
        std::fs::write(&big, &bytes).unwrap();
        assert_eq!(raw_producer_is_transformers(&big).ok(), Some(true));
        let e = check_dump_output("--out", &big).unwrap_err().to_string();
        assert!(e.contains("it holds a dump written by transformers"), "{e}");
        // the first read and what follows it, without the overlap, miss it: the test
        // reaches the overlap
        let first = (1 << 20) + PRODUCER_WINDOW;
        assert!(!names_transformers(&bytes[..first]) && !names_transformers(&bytes[first..]));
        // in the last span of a file larger than two, across the two spans' border, or in
        // neither (spans of 3 MiB here, 64 MiB as run)
        let span = 3usize << 20;
        let ends = dir.path().join("ends.npz");
        for (len, at, found) in [
            (3 * span, 3 * span - 200, true),
            (span + 1000, span - 10, true),
            (3 * span, span + span / 2, false),
        ] {
            let mut bytes = vec![b'x'; len];
            bytes[at..at + name.len()].copy_from_slice(name);
            std::fs::write(&ends, &bytes).unwrap();
            assert_eq!(
                raw_producer_within(&ends, span as u64).ok(),
                Some(found),
                "{len} {at}"
            );
        }
        // what cannot be read is an error, not "no producer": a folder reads as none
        assert!(raw_producer_is_transformers(&dir.path().join("gone.npz")).is_err());
        assert!(raw_producer_is_transformers(dir.path()).is_err());
    }

    #[test]
    fn a_report_output_that_holds_a_dump_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        for (path, kind) in [
            (
                write("a.npz", b"PK\x03\x04rest of a zip"),
                "a zip archive, as an npz dump is",
            ),
            (write("a.json", b"\x93NUMPY\x01\x00"), "an npy array"),
            (write("a.html", &st), "a safetensors file"),
        ] {
            let e = not_a_dump(&[("--json-out", Some(&path))])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("--json-out ")
                    && e.contains(&format!("it holds {kind}, which the report would replace"))
                    && !e.contains('\n'),
                "{e}"
            );
        }
        // a report, an empty file, a header length past the end, no file: written over
        let mut long = 100u64.to_le_bytes().to_vec();
        long.extend_from_slice(b"{}");
        for path in [
            write("r.json", b"{\"ops\": []}"),
            write("empty.json", b""),
            write("short.bin", &long),
            dir.path().join("new.json"),
        ] {
            assert!(not_a_dump(&[("--json-out", Some(&path)), ("--plot", None)]).is_ok());
        }
    }
}
