//! Read-only memory maps of sealed files, and typed views into them.
//!
//! # Safety
//!
//! This is one of the two modules allowed `unsafe` (the other is the SIMD dispatch).
//!
//! **Mapping.** `memmap2::Mmap::map` is `unsafe` because the program has undefined behaviour if the
//! mapped file is modified or truncated while mapped: the bytes behind a `&[u8]` would change under
//! the borrow checker's feet. quiverdb maps only *published* segment files, which are written
//! completely, fsynced and renamed into place before anyone maps them, and are never opened for
//! writing again (compaction writes new files; old ones are deleted only after the last reader
//! drops its map, and unlinking does not affect an existing mapping on POSIX systems). What no
//! process can prevent is another program truncating the file: on Linux that raises SIGBUS on
//! access (see RELIABILITY.md); `quiver verify` and the checksums detect every other kind of damage.
//! Maps are read-only (`PROT_READ`), so a bug cannot write through them.
//!
//! **Typed views.** [`cast_slice`] reinterprets bytes as `u16`, `u32`, `u64` or `f32`. All four are
//! plain-old-data types for which every bit pattern is a valid value, and the function checks
//! alignment and length before the cast (it returns `None` otherwise), so the resulting slice covers
//! exactly the same, properly aligned bytes with the same lifetime.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Granularity of [`ReadOnlyMap::will_need_once`]'s bookkeeping (the common page size).
const PREFETCH_PAGE: usize = 4096;

/// A read-only memory map of a whole, sealed file.
#[derive(Debug)]
pub struct ReadOnlyMap {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl ReadOnlyMap {
    /// Maps `path`. An empty file is reported as [`Error::Corruption`] (nothing quiverdb maps is
    /// ever empty; mapping zero bytes is also not portable).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(Error::corruption(path, 0, "file is empty"));
        }
        // SAFETY: see the module docs: only sealed files that are never written again are mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(ReadOnlyMap { path: path.to_path_buf(), map })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`ReadOnlyMap::will_need`] for the pages of `offset..offset + len` that `requested` does not
    /// mark yet (one bit per 4 KiB page of the map), marking them: each page is advised at most
    /// once, so a process whose index is already in memory pays a bit test, not a system call.
    pub fn will_need_once(&self, requested: &[std::sync::atomic::AtomicU64], offset: usize, len: usize) {
        use std::sync::atomic::Ordering;
        if len == 0 {
            return;
        }
        let (first, last) = (offset / PREFETCH_PAGE, (offset + len - 1) / PREFETCH_PAGE);
        let mut fresh = false;
        for page in first..=last {
            let Some(word) = requested.get(page / 64) else { return };
            let bit = 1u64 << (page % 64);
            if word.load(Ordering::Relaxed) & bit == 0 && word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
                fresh = true;
            }
        }
        if fresh {
            self.will_need(offset, len);
        }
    }

    /// The bitset [`ReadOnlyMap::will_need_once`] keeps for this map, all clear.
    pub fn prefetch_bitset(&self) -> Vec<std::sync::atomic::AtomicU64> {
        (0..self.map.len().div_ceil(PREFETCH_PAGE).div_ceil(64)).map(|_| Default::default()).collect()
    }

    /// Asks the kernel to start reading `len` bytes at `offset` into the page cache now
    /// (`madvise(MADV_WILLNEED)`), so the faults that follow overlap instead of waiting one by one.
    /// Advice only: out-of-range requests and errors are ignored.
    pub fn will_need(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if len > 0 && offset.checked_add(len).is_some_and(|end| end <= self.map.len()) {
            let _ = self.map.advise_range(memmap2::Advice::WillNeed, offset, len);
        }
    }

    /// Tells the kernel the given range will be read at random (no read-ahead), as graph and
    /// token accesses are. Advisory: errors are ignored.
    pub fn advise_random(&self) {
        #[cfg(unix)]
        let _ = self.map.advise(memmap2::Advice::Random);
    }
}

/// Types that [`cast_slice`] may produce: every bit pattern is a valid value.
pub trait Pod: Copy + private::Sealed {}
impl Pod for u16 {}
impl Pod for u32 {}
impl Pod for u64 {}
impl Pod for f32 {}
mod private {
    pub trait Sealed {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
    impl Sealed for f32 {}
}

/// Views `bytes` as a slice of `T`, or `None` if it is misaligned or not a whole number of `T`.
pub fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return None;
    }
    // SAFETY: alignment and length were checked just above; `T: Pod` admits every bit pattern; the
    // returned slice borrows `bytes`, so it cannot outlive the memory.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn will_need_once_marks_each_page_once() {
        use std::sync::atomic::Ordering;
        let dir = std::env::temp_dir().join(format!("quiverdb-willneed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages");
        std::fs::write(&path, vec![7u8; 3 * PREFETCH_PAGE + 10]).unwrap();
        let map = ReadOnlyMap::open(&path).unwrap();
        let bits = map.prefetch_bitset();
        assert_eq!(bits.len(), 1, "4 pages fit one word");
        map.will_need_once(&bits, PREFETCH_PAGE - 1, 2); // pages 0 and 1
        assert_eq!(bits[0].load(Ordering::Relaxed), 0b11);
        map.will_need_once(&bits, 3 * PREFETCH_PAGE, 10); // the last, partial page
        assert_eq!(bits[0].load(Ordering::Relaxed), 0b1011);
        map.will_need_once(&bits, 0, 0); // nothing
        map.will_need(1 << 40, 5); // out of range: ignored, no panic
        map.will_need_once(&bits, 1 << 40, 5);
        assert_eq!(bits[0].load(Ordering::Relaxed), 0b1011);
        assert_eq!(map.bytes()[3 * PREFETCH_PAGE + 9], 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cast_checks_alignment_and_length() {
        // A mapped file starts on a page boundary, so alignment is known exactly.
        let dir = std::env::temp_dir().join(format!("quiverdb-cast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("words");
        let words = [1u64, 2, 3];
        std::fs::write(&path, words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let map = ReadOnlyMap::open(&path).unwrap();
        let bytes = map.bytes();
        assert_eq!(cast_slice::<u64>(bytes), Some(&words[..]));
        assert_eq!(cast_slice::<u32>(&bytes[4..12]), Some(&[0u32, 2][..]));
        assert!(cast_slice::<u32>(&bytes[1..9]).is_none(), "misaligned");
        assert!(cast_slice::<u64>(&bytes[..12]).is_none(), "length not a multiple");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("quiverdb-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(ReadOnlyMap::open(&empty), Err(Error::Corruption { .. })));
        assert!(matches!(ReadOnlyMap::open(&dir.join("missing")), Err(Error::Io { .. })));
        std::fs::write(&empty, b"abc").unwrap();
        assert_eq!(ReadOnlyMap::open(&empty).unwrap().bytes(), b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
