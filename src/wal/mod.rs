//! The write-ahead log: appends, group commit, rotation, replay with torn-tail handling, trimming.
//!
//! Files are `wal/<first_seq, 20 digits>.wal` (byte layout in [`crate::format::wal`] and
//! storage-format.md). Records carry strictly consecutive sequence numbers; every record holds a
//! resolved external id (never a predicate), so replaying a record twice gives the same state.
//!
//! **Appending.** [`Wal::append`] writes a whole buffer of framed records with one `write` call
//! under the file lock, in sequence order. [`Wal::sync_to`] is the group commit: the first caller
//! fsyncs everything written so far and records how far that reached; callers that arrive while an
//! fsync runs wait for it and usually find their record already covered, so N concurrent writers
//! pay about one fsync, not N.
//!
//! **Crash reasoning.** A crash can tear only the last write of the last file (earlier files were
//! fsynced whole before rotation). Replay therefore accepts a bad or incomplete record at the end
//! of the last file as a torn tail and truncates it, but if *any* valid record follows the bad one
//! (or the bad record is in an older file) the log was damaged after being written: that is
//! reported as [`Error::Corruption`] unless the caller chose [`WalRecovery::TruncateAtCorruption`].
//!
//! **Failures.** A failed write or fsync poisons the log: the file may hold a partial record and
//! the page cache's state after a failed fsync is unknown, so every later append or sync fails
//! until the collection is reopened (and replay decides what survived).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Poison, Result};
use crate::format::wal::{decode_header, decode_record, encode_header, FrameError, Record, WalHeader, WAL_HEADER_LEN};
use crate::io::fs::sync_dir;
use crate::io::mmap::ReadOnlyMap;
use crate::io::storage::{Storage, WritableFile};

/// What replay does when it finds a damaged record that is not a torn tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WalRecovery {
    /// Refuse to open: report the damaged record as [`Error::Corruption`]. The default.
    #[default]
    Strict,
    /// Salvage: keep every record before the damaged one, drop it and everything after it
    /// (including later WAL files), and open. Acknowledged writes after the damage are lost; the
    /// replay report says how many bytes were dropped. Use only to rescue a damaged collection.
    TruncateAtCorruption,
}

/// File name of the WAL file whose first record is `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// The WAL files in `dir`, sorted by first sequence number, with that number.
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".wal") {
            if stem.len() == 20 {
                if let Ok(seq) = stem.parse::<u64>() {
                    out.push((seq, entry.path()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// WAL files read.
    pub files: usize,
    /// Records applied (sequence number above the checkpoint).
    pub applied: u64,
    /// Records skipped because the checkpoint already covers them.
    pub skipped: u64,
    /// Highest sequence number seen (the checkpoint if none).
    pub last_seq: u64,
    /// Bytes cut from a torn tail of the last file.
    pub torn_tail_bytes: u64,
    /// With [`WalRecovery::TruncateAtCorruption`]: the damage that was cut away, and how many bytes.
    pub salvaged: Option<(String, u64)>,
}

/// Reads every WAL file in `dir` in order and calls `apply` for each record with a sequence number
/// above `checkpoint`. With `repair` (the storage to write through), a torn tail (or, under
/// `TruncateAtCorruption`, the damaged part) is cut from the file so the log is clean again;
/// without it nothing is modified (for inspection tools).
pub fn replay(
    dir: &Path,
    checkpoint: u64,
    recovery: WalRecovery,
    repair: Option<&dyn Storage>,
    mut apply: impl FnMut(Record) -> Result<()>,
) -> Result<ReplayReport> {
    let files = list_files(dir)?;
    let mut report = ReplayReport { last_seq: checkpoint, ..Default::default() };
    let mut prev_seq: Option<u64> = None;
    for (index, (name_seq, path)) in files.iter().enumerate() {
        let is_last = index + 1 == files.len();
        report.files += 1;
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if len < WAL_HEADER_LEN as u64 {
            // Only the newest file can be caught mid-creation (its header is fsynced before use).
            if is_last {
                report.torn_tail_bytes += len;
                if let Some(storage) = repair {
                    storage.remove_file(path).map_err(|e| Error::io(path, e))?;
                    sync_dir(storage, dir)?;
                }
                continue;
            }
            return Err(Error::corruption(path, 0, format!("WAL file of {len} bytes has no complete header")));
        }
        let map = ReadOnlyMap::open(path)?;
        let bytes = map.bytes();
        let header = decode_header(bytes).map_err(|e| e.in_file(path, 0))?;
        if header.first_seq != *name_seq {
            return Err(Error::corruption(
                path,
                16,
                format!("header says the file starts at sequence {}, its name says {name_seq}", header.first_seq),
            ));
        }
        // Records of an atomic batch wait here until its last record is read; batches never span
        // files (the writer rotates between batches).
        let mut batch: Vec<Record> = Vec::new();
        let mut batch_start = WAL_HEADER_LEN;
        let mut pos = WAL_HEADER_LEN;
        let mut damage: Option<(String, bool)> = None;
        while pos < bytes.len() {
            match decode_record(&bytes[pos..], pos as u64) {
                Ok((record, used)) => {
                    let expected = prev_seq.map(|p| p + 1);
                    if record.seq < header.first_seq || expected.is_some_and(|e| e != record.seq) {
                        return Err(Error::corruption(
                            path,
                            pos as u64 + 8,
                            format!(
                                "record sequence {} breaks the order (expected {}, file starts at {})",
                                record.seq,
                                expected.map_or("any".to_string(), |e| e.to_string()),
                                header.first_seq
                            ),
                        ));
                    }
                    prev_seq = Some(record.seq);
                    if batch.is_empty() {
                        batch_start = pos;
                    }
                    let last_of_batch = !record.continues;
                    batch.push(record);
                    pos += used;
                    if last_of_batch {
                        for record in batch.drain(..) {
                            report.last_seq = report.last_seq.max(record.seq);
                            if record.seq > checkpoint {
                                report.applied += 1;
                                apply(record)?;
                            } else {
                                report.skipped += 1;
                            }
                        }
                    }
                }
                Err(err) => {
                    let what = match &err {
                        FrameError::Incomplete => "incomplete record".to_string(),
                        FrameError::Invalid(e) => e.what.clone(),
                    };
                    damage = Some((what, valid_record_after(bytes, pos, prev_seq)));
                    break;
                }
            }
        }
        let incomplete_batch = !batch.is_empty();
        if damage.is_none() && !incomplete_batch {
            continue;
        }
        // A torn end: the last file ends in a damaged record with nothing valid after it, or in
        // a batch whose last record was never written. Everything from the start of the
        // unfinished batch (or the damaged record) on is cut.
        let cut_at = if incomplete_batch { batch_start } else { pos };
        let followed_by_valid = damage.as_ref().is_some_and(|(_, v)| *v);
        if is_last && !followed_by_valid {
            report.torn_tail_bytes += (bytes.len() - cut_at) as u64;
            drop(map);
            if let Some(storage) = repair {
                truncate(storage, path, cut_at as u64)?;
            }
            return Ok(report);
        }
        let what = damage.map_or_else(|| "a batch without its last record".to_string(), |(w, _)| w);
        let reason = format!(
            "damaged WAL record ({what}){}",
            if followed_by_valid { " followed by valid records" } else { " in a WAL file that is not the last" }
        );
        if recovery == WalRecovery::Strict {
            return Err(Error::corruption(path, cut_at as u64, reason));
        }
        let mut dropped = (bytes.len() - cut_at) as u64;
        for (_, later) in &files[index + 1..] {
            dropped += std::fs::metadata(later).map_err(|e| Error::io(later, e))?.len();
        }
        report.salvaged = Some((format!("{}: byte {cut_at}: {reason}", path.display()), dropped));
        drop(map);
        if let Some(storage) = repair {
            truncate(storage, path, cut_at as u64)?;
            for (_, later) in &files[index + 1..] {
                storage.remove_file(later).map_err(|e| Error::io(later, e))?;
            }
            sync_dir(storage, dir)?;
        }
        return Ok(report);
    }
    Ok(report)
}

/// How many bytes the search for a valid record after a damaged one may checksum in all. Each
/// candidate offset whose frame header is plausible costs a CRC over its length (up to 65 MiB),
/// so an unbounded search over a large damaged log could take hours instead of reporting damage.
const RESYNC_CRC_BUDGET: u64 = 256 << 20;

/// True if some offset after `bad` decodes as a record that continues the sequence — the sign that
/// a damaged record sits in the middle of the log rather than at a torn end. A candidate is
/// checksummed only if its frame header is plausible (a known kind, a length that fits, a
/// sequence number just after the last good one); past [`RESYNC_CRC_BUDGET`] bytes of checksums
/// the answer is "yes": damage that cannot be shown to be a torn end is reported, never cut.
fn valid_record_after(bytes: &[u8], bad: usize, prev_seq: Option<u64>) -> bool {
    let mut budget = RESYNC_CRC_BUDGET;
    for p in bad + 1..bytes.len().saturating_sub(crate::format::wal::FRAME_LEN - 1) {
        let Some(frame) = bytes.get(p..p + crate::format::wal::FRAME_LEN) else { break };
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
        let seq = u64::from_le_bytes(frame[8..16].try_into().unwrap_or_default());
        let plausible_seq = prev_seq.is_none_or(|s| seq > s && seq - s <= 1 << 20);
        if !plausible_seq || !(1..=2).contains(&frame[16]) || (p as u64 + 20 + len) > bytes.len() as u64 {
            continue;
        }
        if budget < len {
            return true;
        }
        budget -= len;
        if let Ok((r, _)) = decode_record(&bytes[p..], p as u64) {
            if prev_seq.is_none_or(|s| r.seq > s) {
                return true;
            }
        }
    }
    false
}

fn truncate(storage: &dyn Storage, path: &Path, len: u64) -> Result<()> {
    let file = storage.open_writable(path).map_err(|e| Error::io(path, e))?;
    file.set_len(len).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Deletes the WAL files all of whose records are at or below `checkpoint`: every file but the
/// newest whose successor starts at or below `checkpoint + 1`. Returns how many were deleted.
pub fn trim(storage: &dyn Storage, dir: &Path, checkpoint: u64) -> Result<usize> {
    let files = list_files(dir)?;
    let mut removed = 0;
    for pair in files.windows(2) {
        if pair[1].0 <= checkpoint + 1 {
            storage.remove_file(&pair[0].1).map_err(|e| Error::io(&pair[0].1, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(storage, dir)?;
    }
    Ok(removed)
}

struct ActiveFile {
    file: Arc<dyn WritableFile>,
    path: PathBuf,
    bytes: u64,
}

struct SyncState {
    synced_seq: u64,
}

/// The appending side of the log (one per open collection).
pub struct Wal {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    active: Mutex<ActiveFile>,
    sync: Mutex<SyncState>,
    written_seq: AtomicU64,
    /// First failure; every later operation refuses.
    failure: Poison,
}

impl Wal {
    /// Starts a new WAL file in `dir` whose first record will be `next_seq` (any leftover file of
    /// that name holds no records, since replay ended below `next_seq`, and is replaced).
    pub fn create(storage: Arc<dyn Storage>, dir: &Path, next_seq: u64) -> Result<Self> {
        let active = new_file(&*storage, dir, next_seq)?;
        Ok(Wal {
            storage,
            dir: dir.to_path_buf(),
            active: Mutex::new(active),
            sync: Mutex::new(SyncState { synced_seq: next_seq - 1 }),
            written_seq: AtomicU64::new(next_seq - 1),
            failure: Poison::default(),
        })
    }

    fn check(&self) -> Result<()> {
        self.failure.check()
    }

    fn fail(&self, err: Error) -> Error {
        self.failure.set(err)
    }

    /// Appends framed records (built with [`crate::format::wal`]) whose last sequence number is
    /// `last_seq`. The caller serialises appends in sequence order. Written to the OS, not synced.
    pub fn append(&self, records: &[u8], last_seq: u64) -> Result<()> {
        self.check()?;
        let mut active = self.active.lock();
        let path = active.path.clone();
        if let Err(e) = active.file.append(records) {
            return Err(self.fail(Error::io(path, e)));
        }
        active.bytes += records.len() as u64;
        self.written_seq.store(last_seq, Ordering::Release);
        Ok(())
    }

    /// Makes every record up to `seq` durable (group commit, see the module docs).
    pub fn sync_to(&self, seq: u64) -> Result<()> {
        let mut state = self.sync.lock();
        if state.synced_seq >= seq {
            return Ok(());
        }
        self.check()?;
        let target = self.written_seq.load(Ordering::Acquire);
        let (file, path) = {
            let active = self.active.lock();
            (active.file.clone(), active.path.clone())
        };
        if let Err(e) = file.sync_data() {
            return Err(self.fail(Error::io(path, e)));
        }
        state.synced_seq = state.synced_seq.max(target);
        Ok(())
    }

    /// Highest sequence number written to the OS.
    pub fn written_seq(&self) -> u64 {
        self.written_seq.load(Ordering::Acquire)
    }

    /// Closes the current file (fsynced) and starts a new one at `next_seq`, so the records of a
    /// frozen memtable end in files that [`trim`] can delete once a checkpoint covers them.
    pub fn rotate(&self, next_seq: u64) -> Result<()> {
        self.check()?;
        let mut sync = self.sync.lock();
        let mut active = self.active.lock();
        if let Err(e) = active.file.sync_data() {
            return Err(self.fail(Error::io(active.path.clone(), e)));
        }
        sync.synced_seq = self.written_seq.load(Ordering::Acquire);
        match new_file(&*self.storage, &self.dir, next_seq) {
            Ok(file) => *active = file,
            Err(e) => return Err(self.fail(e)),
        }
        Ok(())
    }

    /// Bytes in the current file (header included).
    pub fn active_bytes(&self) -> u64 {
        self.active.lock().bytes
    }
}

/// Creates `first_seq`'s file: header written and fsynced, then the directory fsynced, so the file
/// exists with a valid header before any record is acknowledged from it.
fn new_file(storage: &dyn Storage, dir: &Path, first_seq: u64) -> Result<ActiveFile> {
    let path = dir.join(file_name(first_seq));
    let file = storage.create(&path).map_err(|e| Error::io(&path, e))?;
    file.append(&encode_header(&WalHeader { first_seq })).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(storage, dir)?;
    Ok(ActiveFile { file, path, bytes: WAL_HEADER_LEN as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::storage::TokenStorage;
    use crate::format::wal::{encode_delete, RecordOp};
    use crate::io::storage::{real, RealStorage};
    use std::fs::OpenOptions;

    fn tmp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quiverdb-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_deletes(wal: &Wal, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let mut buf = Vec::new();
            encode_delete(&mut buf, seq, seq * 10);
            wal.append(&buf, seq).unwrap();
        }
    }

    fn collect(dir: &Path, checkpoint: u64, recovery: WalRecovery) -> Result<(Vec<u64>, ReplayReport)> {
        let mut seqs = Vec::new();
        let report = replay(dir, checkpoint, recovery, Some(&RealStorage), |r| {
            assert_eq!(r.op, RecordOp::Delete { id: r.seq * 10 });
            seqs.push(r.seq);
            Ok(())
        })?;
        Ok((seqs, report))
    }

    #[test]
    fn append_rotate_replay_trim() {
        let dir = tmp_dir("basic");
        let wal = Wal::create(real(), &dir, 1).unwrap();
        write_deletes(&wal, 1..=5);
        wal.sync_to(5).unwrap();
        wal.rotate(6).unwrap();
        write_deletes(&wal, 6..=9);
        drop(wal);
        let (seqs, report) = collect(&dir, 0, WalRecovery::Strict).unwrap();
        assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
        assert_eq!((report.files, report.last_seq, report.torn_tail_bytes), (2, 9, 0));
        let (seqs, report) = collect(&dir, 7, WalRecovery::Strict).unwrap();
        assert_eq!(seqs, vec![8, 9]);
        assert_eq!(report.skipped, 7);
        assert_eq!(trim(&RealStorage, &dir, 4).unwrap(), 0, "file 1 still holds record 5");
        assert_eq!(trim(&RealStorage, &dir, 5).unwrap(), 1);
        let (seqs, _) = collect(&dir, 5, WalRecovery::Strict).unwrap();
        assert_eq!(seqs, vec![6, 7, 8, 9]);
    }

    #[test]
    fn a_batch_torn_anywhere_is_applied_whole_or_not_at_all() {
        // The story: `insert_batch` promises all or nothing, but its records were framed alone, so
        // a crash (or a reader) mid-append replayed the complete records of a half-written batch.
        let dir = tmp_dir("torn-batch");
        let wal = Wal::create(real(), &dir, 1).unwrap();
        write_deletes(&wal, 1..=1);
        let mut batch = Vec::new();
        let tokens = vec![0u8; 2 * 4];
        for seq in 2..=4 {
            crate::format::wal::encode_put(&mut batch, seq, seq < 4, seq * 10, 4, TokenStorage::F16, &tokens, b"");
        }
        wal.append(&batch, 4).unwrap();
        drop(wal);
        let path = dir.join(file_name(1));
        let full = std::fs::read(&path).unwrap();
        let batch_start = full.len() - batch.len();
        for cut in batch_start..=full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let mut seqs = Vec::new();
            let report = replay(&dir, 0, WalRecovery::Strict, Some(&RealStorage), |r| {
                seqs.push(r.seq);
                Ok(())
            })
            .unwrap();
            let expected: Vec<u64> = if cut == full.len() { vec![1, 2, 3, 4] } else { vec![1] };
            assert_eq!(seqs, expected, "cut at {cut}");
            let kept = if cut == full.len() { full.len() } else { batch_start };
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, kept, "the partial batch is cut whole");
            assert_eq!(report.last_seq, *expected.last().unwrap());
        }
    }

    #[test]
    fn torn_tail_at_every_byte_is_cut_to_the_complete_prefix() {
        let dir = tmp_dir("torn");
        let wal = Wal::create(real(), &dir, 1).unwrap();
        write_deletes(&wal, 1..=3);
        drop(wal);
        let path = dir.join(file_name(1));
        let full = std::fs::read(&path).unwrap();
        let record_len = (full.len() - WAL_HEADER_LEN) / 3;
        for cut in WAL_HEADER_LEN..=full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (seqs, report) = collect(&dir, 0, WalRecovery::Strict).unwrap();
            let complete = (cut - WAL_HEADER_LEN) / record_len;
            assert_eq!(seqs.len(), complete, "cut at {cut}");
            assert_eq!(report.torn_tail_bytes as usize, cut - WAL_HEADER_LEN - complete * record_len);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, WAL_HEADER_LEN + complete * record_len);
            // Replaying the repaired log again gives the same records (idempotent).
            assert_eq!(collect(&dir, 0, WalRecovery::Strict).unwrap().0, seqs);
        }
        for tail in [vec![0u8; 100], vec![0xA5; 57]] {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let (seqs, report) = collect(&dir, 0, WalRecovery::Strict).unwrap();
            assert_eq!(seqs, vec![1, 2, 3]);
            assert_eq!(report.torn_tail_bytes as usize, tail.len());
        }
    }

    #[test]
    fn a_bad_record_before_good_ones_is_corruption_unless_salvaged() {
        let dir = tmp_dir("middle");
        let wal = Wal::create(real(), &dir, 1).unwrap();
        write_deletes(&wal, 1..=3);
        drop(wal);
        let path = dir.join(file_name(1));
        let full = std::fs::read(&path).unwrap();
        let record_len = (full.len() - WAL_HEADER_LEN) / 3;
        let mut bytes = full.clone();
        bytes[WAL_HEADER_LEN + record_len + 12] ^= 0x10; // record 2's sequence number
        std::fs::write(&path, &bytes).unwrap();
        let err = collect(&dir, 0, WalRecovery::Strict).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { offset, what, .. } if *offset == (WAL_HEADER_LEN + record_len) as u64 && what.contains("followed by valid")),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "strict replay must not modify the log");
        let (seqs, report) = collect(&dir, 0, WalRecovery::TruncateAtCorruption).unwrap();
        assert_eq!(seqs, vec![1]);
        assert_eq!(report.salvaged.unwrap().1 as usize, 2 * record_len);
    }

    #[test]
    fn damage_in_an_older_file_is_corruption() {
        let dir = tmp_dir("older");
        let wal = Wal::create(real(), &dir, 1).unwrap();
        write_deletes(&wal, 1..=2);
        wal.rotate(3).unwrap();
        write_deletes(&wal, 3..=3);
        drop(wal);
        let path = dir.join(file_name(1));
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        assert!(matches!(collect(&dir, 0, WalRecovery::Strict), Err(Error::Corruption { .. })));
    }
}
