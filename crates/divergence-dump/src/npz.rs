//! A minimal read-only zip parser for `.npz` archives over a memory map.
//!
//! The central directory is parsed once at open and each member is reduced to an
//! [`ZipMember`] (data offset, compressed size, method, CRC), so reading a tensor later needs no
//! shared mutable state: stored members are sliced straight out of the map, deflated ones are
//! inflated from their slice. Zip64 is supported both in the end-of-central-directory records
//! (archives over 4 GiB or with more than 65535 members) and in per-member extra fields, which
//! `numpy.savez` always writes (`force_zip64=True`). Encrypted members and compression methods
//! other than stored (0) and deflate (8) are refused per member.

use std::path::Path;

use rayon::prelude::*;

use crate::error::DumpError;

/// Compression methods we read.
pub const METHOD_STORED: u16 = 0;
pub const METHOD_DEFLATE: u16 = 8;

const SIG_LOCAL: &[u8; 4] = b"PK\x03\x04";
const SIG_CENTRAL: &[u8; 4] = b"PK\x01\x02";
const SIG_EOCD: &[u8; 4] = b"PK\x05\x06";
const SIG_ZIP64_EOCD: &[u8; 4] = b"PK\x06\x06";
const SIG_ZIP64_LOCATOR: &[u8; 4] = b"PK\x06\x07";

/// One member of the archive, located in the file.
#[derive(Debug, Clone)]
pub struct ZipMember {
    pub name: String,
    pub method: u16,
    pub encrypted: bool,
    pub crc32: u32,
    /// Offset of the member's (possibly compressed) data in the file.
    pub data_start: usize,
    pub compressed_size: usize,
    pub uncompressed_size: u64,
    /// Why the member's own bytes cannot be located (its local header is damaged, or its
    /// data runs past the end of the file): the member is unreadable, the rest of the
    /// archive is not. `None` for a sound member.
    pub damage: Option<String>,
}

impl ZipMember {
    /// The member's raw (possibly compressed) bytes.
    pub fn raw<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        file.get(self.data_start..self.data_start.saturating_add(self.compressed_size))
            .unwrap_or_default()
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Whether `buf` looks like the start of a zip archive.
pub(crate) fn has_zip_magic(buf: &[u8]) -> bool {
    buf.starts_with(SIG_LOCAL) || buf.starts_with(SIG_EOCD)
}

/// Parse the central directory of the zip archive `buf` (the whole file).
pub fn read_members(path: &Path, buf: &[u8]) -> Result<Vec<ZipMember>, DumpError> {
    let truncated = |detail: &str| DumpError::TruncatedZip {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let corrupt = |detail: String| DumpError::CorruptZip {
        path: path.to_path_buf(),
        detail,
    };

    let Some(eocd) = find_eocd(buf) else {
        return Err(if buf.starts_with(SIG_LOCAL) {
            truncated("no end of central directory record; the file was cut short")
        } else {
            DumpError::NotZip {
                path: path.to_path_buf(),
            }
        });
    };
    let mut n_entries = u64::from(u16_at(buf, eocd + 10).unwrap_or(0));
    let mut cd_size = u64::from(u32_at(buf, eocd + 12).unwrap_or(0));
    let mut cd_offset = u64::from(u32_at(buf, eocd + 16).unwrap_or(0));
    let mut cd_limit = eocd; // the central directory must end before this offset

    // Zip64 end of central directory, announced by a locator just before the classic record.
    let locator = eocd
        .checked_sub(20)
        .filter(|&l| buf.get(l..l + 4) == Some(SIG_ZIP64_LOCATOR));
    let needs_zip64 = n_entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF;
    if let Some(loc) = locator {
        let z = u64_at(buf, loc + 8).and_then(|o| usize::try_from(o).ok());
        let z = z.filter(|&z| buf.get(z..z.saturating_add(4)) == Some(SIG_ZIP64_EOCD));
        let Some(z) = z else {
            return Err(corrupt(
                "zip64 end of central directory record not found".into(),
            ));
        };
        let (Some(n), Some(size), Some(off)) = (
            u64_at(buf, z + 32),
            u64_at(buf, z + 40),
            u64_at(buf, z + 48),
        ) else {
            return Err(truncated(
                "zip64 end of central directory record is cut short",
            ));
        };
        n_entries = n;
        cd_size = size;
        cd_offset = off;
        cd_limit = z;
    } else if needs_zip64 {
        return Err(corrupt(
            "zip64 archive without a zip64 end of central directory locator".into(),
        ));
    }

    let cd_end = cd_offset
        .checked_add(cd_size)
        .and_then(|e| usize::try_from(e).ok());
    let cd_start = usize::try_from(cd_offset).ok();
    let (Some(cd_start), Some(cd_end)) = (cd_start, cd_end) else {
        return Err(corrupt("central directory offset out of range".into()));
    };
    if cd_end > cd_limit {
        return Err(truncated(
            "central directory extends past the end of the file",
        ));
    }
    // Each central directory record is at least 46 bytes: bound the count before allocating.
    if n_entries > cd_size / 46 {
        return Err(corrupt(format!(
            "{n_entries} entries cannot fit in a {cd_size}-byte central directory"
        )));
    }
    if n_entries > crate::MAX_ENTRIES as u64 {
        return Err(DumpError::TooManyTensors {
            path: path.to_path_buf(),
            count: usize::try_from(n_entries).unwrap_or(usize::MAX),
            max: crate::MAX_ENTRIES,
        });
    }
    let cd = buf.get(cd_start..cd_end).unwrap_or_default();

    // The records, walked in order (each gives the next one's offset); a record's contents
    // are then read in parallel (a decode dump has tens of thousands of members). The first
    // problem in record order is the one reported, as a walk that stopped there would.
    let mut starts: Vec<usize> = Vec::with_capacity(n_entries as usize);
    let mut walk_error = None;
    let mut p = 0usize;
    for i in 0..n_entries {
        if cd.get(p..p + 4) != Some(SIG_CENTRAL) {
            walk_error = Some(corrupt(format!(
                "central directory record {i} has a bad signature"
            )));
            break;
        }
        let (Some(nlen), Some(xlen), Some(clen)) =
            (u16_at(cd, p + 28), u16_at(cd, p + 30), u16_at(cd, p + 32))
        else {
            walk_error = Some(corrupt(format!(
                "central directory record {i} is cut short"
            )));
            break;
        };
        starts.push(p);
        p += 46 + usize::from(nlen) + usize::from(xlen) + usize::from(clen);
    }
    let record = |(i, &p): (usize, &usize)| -> Result<ZipMember, DumpError> {
        let cut_short = || corrupt(format!("central directory record {i} is cut short"));
        let rec = |off: usize| p + off;
        let (
            Some(flags),
            Some(method),
            Some(crc32),
            Some(csize32),
            Some(usize32),
            Some(nlen),
            Some(xlen),
            Some(local32),
        ) = (
            u16_at(cd, rec(8)),
            u16_at(cd, rec(10)),
            u32_at(cd, rec(16)),
            u32_at(cd, rec(20)),
            u32_at(cd, rec(24)),
            u16_at(cd, rec(28)),
            u16_at(cd, rec(30)),
            u32_at(cd, rec(42)),
        )
        else {
            return Err(cut_short());
        };
        let name_start = p + 46;
        let extra_start = name_start + usize::from(nlen);
        let (Some(name), Some(extra)) = (
            cd.get(name_start..extra_start),
            cd.get(extra_start..extra_start + usize::from(xlen)),
        ) else {
            return Err(cut_short());
        };
        let name = String::from_utf8_lossy(name).into_owned();

        // Zip64 extended information: the 64-bit values, present only for fields set to all-ones.
        let mut compressed = u64::from(csize32);
        let mut uncompressed = u64::from(usize32);
        let mut local = u64::from(local32);
        if let Some(z) = find_extra(extra, 0x0001) {
            let mut q = 0usize;
            let mut take = |field: &mut u64, wide: bool| -> Result<(), DumpError> {
                if wide {
                    *field = u64_at(z, q).ok_or_else(|| {
                        corrupt(format!("entry '{name}': zip64 extra field is cut short"))
                    })?;
                    q += 8;
                }
                Ok(())
            };
            take(&mut uncompressed, usize32 == 0xFFFF_FFFF)?;
            take(&mut compressed, csize32 == 0xFFFF_FFFF)?;
            take(&mut local, local32 == 0xFFFF_FFFF)?;
        }

        // The local header repeats name and extra with its own lengths; data follows it. A
        // damaged local header or data past the end of the file makes this member unreadable,
        // not the archive (the central directory, read above, is sound).
        let (data_start, compressed_size, damage) = match locate(buf, local, compressed) {
            Ok((start, size)) => (start, size, None),
            Err(why) => (0, 0, Some(why)),
        };
        Ok(ZipMember {
            name,
            method,
            encrypted: flags & 1 != 0,
            crc32,
            data_start,
            compressed_size,
            uncompressed_size: uncompressed,
            damage,
        })
    };
    let parsed: Vec<Result<ZipMember, DumpError>> = starts
        .par_iter()
        .enumerate()
        .with_min_len(256)
        .map(record)
        .collect();
    let mut members = Vec::with_capacity(parsed.len());
    for m in parsed {
        members.push(m?);
    }
    match walk_error {
        Some(e) => Err(e),
        None => Ok(members),
    }
}

/// Where a member's data is: `(start, size)` from its local header at `local`, or why not.
fn locate(buf: &[u8], local: u64, compressed: u64) -> Result<(usize, usize), String> {
    let past_end = || "its local header starts past the end of the file".to_string();
    let local = usize::try_from(local).map_err(|_| past_end())?;
    if local.checked_add(30).is_none_or(|e| e > buf.len()) {
        return Err(past_end());
    }
    if buf.get(local..local + 4) != Some(SIG_LOCAL) {
        return Err("bad local header signature".to_string());
    }
    let (Some(lnlen), Some(lxlen)) = (u16_at(buf, local + 26), u16_at(buf, local + 28)) else {
        return Err(past_end());
    };
    let data_start = local + 30 + usize::from(lnlen) + usize::from(lxlen);
    let compressed_size = usize::try_from(compressed).unwrap_or(usize::MAX);
    if data_start
        .checked_add(compressed_size)
        .is_none_or(|e| e > buf.len())
    {
        return Err(format!(
            "its data ({compressed_size} bytes at offset {data_start}) extends past the end of the file"
        ));
    }
    Ok((data_start, compressed_size))
}

/// Offset of the classic end-of-central-directory record, searching back over a comment of up
/// to 65535 bytes.
fn find_eocd(buf: &[u8]) -> Option<usize> {
    let last = buf.len().checked_sub(22)?;
    let first = last.saturating_sub(0xFFFF);
    (first..=last).rev().find(|&pos| {
        buf.get(pos..pos + 4) == Some(SIG_EOCD)
            && u16_at(buf, pos + 20).is_some_and(|c| pos + 22 + usize::from(c) <= buf.len())
    })
}

/// The payload of the extra field with header id `id`.
fn find_extra(mut extra: &[u8], id: u16) -> Option<&[u8]> {
    while extra.len() >= 4 {
        let hid = u16_at(extra, 0)?;
        let len = usize::from(u16_at(extra, 2)?);
        let data = extra.get(4..4 + len)?;
        if hid == id {
            return Some(data);
        }
        extra = extra.get(4 + len..)?;
    }
    None
}
