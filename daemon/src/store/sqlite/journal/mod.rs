//! The journal: an append-only log of CRC-framed records in segment files,
//! what an acknowledgement waits for.
//!
//! Every accepted request goes here once, whole (headers, body, its events
//! and what became of them), in one `write` and one `fdatasync` shared by
//! every request of a group. The database holds the state that follows from
//! these records and notes the last record it holds; at start the records
//! after it are applied again (see `sqlite/ingest.rs`, `recover`).
//!
//! ## On disk
//! `journal/{first_seq:020}.log` files; the last is the one appended to, and
//! a new one is started once it passes the segment size. A record is a frame
//! `[len u32][crc u32][seq u64][payload: len bytes]`, little-endian, the CRC
//! (CRC-32, `crc32fast`) over len, seq and payload.
//! Sequence numbers rise by one from record to record, across segments.
//!
//! A segment is filled with zeros ahead of its records (see [`PREFILL`]):
//! the records end where the zeros begin. Seqs start at 1, so a header of
//! zeros is never a record.
//!
//! ## Damage
//! - A **torn tail** (the last frames cut or garbled by a crash mid-write, no
//!   good frame after them) is cut off at open, and said so.
//! - A **damaged record** (its CRC fails, good frames after it) is skipped
//!   when read in order: the reader looks for the next good frame (its seq
//!   higher than the last good one, its CRC right) and reports the seqs and
//!   bytes it passed over.
//! - A failed `fdatasync` leaves the file's state unknown: the journal then
//!   refuses every later append (the store answers 503) until it is opened
//!   again, rather than acknowledge what may not be on disk.
//!
//! One process appends: `journal/LOCK` is held (`flock`) while a journal is
//! open for writing. Readers (`read_at`) need no lock: records are written
//! once and never changed, and a segment is removed only when nothing in the
//! database points into it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes before a record's payload.
pub const HEADER: usize = 16;
/// The largest payload a frame may claim; a header claiming more is damage.
pub const MAX_RECORD: usize = 256 << 20;
/// Zeros written ahead of the records, so that a group's `fdatasync` finds
/// the file's size unchanged and has only data to flush (appending to a
/// growing file costs a filesystem journal commit at every sync: here
/// ~280 µs a sync against ~190 µs in place).
const PREFILL: u64 = 1 << 20;

/// Where a record is: its sequence number and its frame's offset in the
/// segment that holds it (the segment is found from the seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub offset: u64,
}

/// What opening (or reading in order) found wrong and passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The end of the last segment held no whole good frame: cut off.
    TornTail {
        segment: PathBuf,
        offset: u64,
        bytes: u64,
    },
    /// Frames whose CRC failed, between two good ones: skipped.
    Skipped {
        segment: PathBuf,
        offset: u64,
        bytes: u64,
        /// The seqs missing between the good frames either side (none if
        /// the damage was bytes between two frames that follow each other).
        seqs: Option<std::ops::RangeInclusive<u64>>,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::TornTail {
                segment,
                offset,
                bytes,
            } => write!(
                f,
                "journal {}: cut off a torn tail of {bytes} bytes at offset {offset} (a write cut short by a crash)",
                segment.display()
            ),
            Damage::Skipped {
                segment,
                offset,
                bytes,
                seqs,
            } => match seqs {
                Some(seqs) => write!(
                    f,
                    "journal {}: skipped {bytes} damaged bytes at offset {offset}: records {}..={} are lost (they fail their CRC)",
                    segment.display(),
                    seqs.start(),
                    seqs.end()
                ),
                None => write!(
                    f,
                    "journal {}: skipped {bytes} damaged bytes at offset {offset} (no record lost)",
                    segment.display()
                ),
            },
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// `fdatasync` after each group (durability = "full").
    pub sync: bool,
    /// A new segment is started once the last one is this large.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            sync: true,
            segment_bytes: 64 << 20,
        }
    }
}

/// The journal, open for appending.
pub struct Journal {
    dir: PathBuf,
    options: JournalOptions,
    /// First seqs of the segments, oldest first; the last is `active`'s.
    segments: Vec<u64>,
    active: File,
    /// Where the records of the active segment end.
    active_len: u64,
    /// The active segment's length: records, then zeros.
    filled: u64,
    next_seq: u64,
    /// A frame group staged by `stage`, written by `commit`.
    staged: Vec<u8>,
    staged_count: u64,
    /// Set when a sync failed: nothing more is appended.
    broken: Option<String>,
    /// Bytes held by all segments.
    bytes: u64,
    /// Deletes the files of removed segments, off the writer's thread.
    remover: Remover,
    _lock: File,
}

/// A thread that deletes the files of segments the journal let go of:
/// unlinking a segment and syncing the folder takes milliseconds, which
/// the writer (every acknowledgement waits for it) should not spend. A
/// file still there after a crash is a segment no request needs; the next
/// sweep removes it again.
#[derive(Default)]
struct Remover {
    queue: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Remover {
    fn remove(&mut self, dir: &Path, path: PathBuf) {
        if self.queue.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            let folder = dir.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("switchyard-unlink".into())
                .spawn(move || {
                    while let Ok(path) = rx.recv() {
                        let removed = std::fs::remove_file(&path).and_then(|()| sync_dir(&folder));
                        if let Err(e) = removed {
                            tracing::warn!("cannot remove journal segment {}: {e}", path.display());
                        }
                    }
                });
            match spawned {
                Ok(thread) => (self.queue, self.thread) = (Some(tx), Some(thread)),
                Err(_) => {
                    // No thread to spare: remove it here.
                    let _ = std::fs::remove_file(&path).and_then(|()| sync_dir(dir));
                    return;
                }
            }
        }
        if let Some(queue) = &self.queue {
            let _ = queue.send(path);
        }
    }
}

impl Drop for Remover {
    /// Waits for the removals asked for.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first seqs of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_suffix(".log").and_then(|s| s.parse().ok()) {
            firsts.push(n);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

fn crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn frame_into(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A good frame at `at` in `buf` whose seq is in `seqs`: (seq, payload range).
fn frame_at(
    buf: &[u8],
    at: usize,
    seqs: std::ops::Range<u64>,
) -> Option<(u64, std::ops::Range<usize>)> {
    let head = buf.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(head[0..4].try_into().ok()?);
    let sum = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if len as usize > MAX_RECORD || !seqs.contains(&seq) {
        return None;
    }
    let body = at + HEADER..at + HEADER + len as usize;
    let payload = buf.get(body.clone())?;
    (crc(len, seq, payload) == sum).then_some((seq, body))
}

/// Seqs a good frame after damage may carry: above the last good one, and
/// not absurdly far above it.
fn plausible(after: Option<u64>, first: u64) -> std::ops::Range<u64> {
    let low = after.map_or(first, |s| s + 1);
    low..low.saturating_add(1 << 32)
}

/// Reads a whole segment's frames in order, skipping damage. Returns the
/// records, the damage found, and the end of the last good frame.
fn scan(path: &Path, first: u64) -> io::Result<(Vec<Record>, Vec<Damage>, u64)> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let mut records = Vec::new();
    let mut damage = Vec::new();
    let mut at = 0usize;
    let mut last: Option<u64> = None;
    let mut end = 0u64;
    // Where anything but the zeros written ahead ends.
    let written = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    while at < written {
        if let Some((seq, body)) = frame_at(&buf, at, plausible(last, first)) {
            if let Some(prev) = last.filter(|p| seq > p + 1) {
                // A gap with no damaged bytes: frames lost whole are damage too.
                damage.push(Damage::Skipped {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    bytes: 0,
                    seqs: Some(prev + 1..=seq - 1),
                });
            }
            records.push(Record {
                position: Position {
                    seq,
                    offset: at as u64,
                },
                payload: buf[body.clone()].to_vec(),
            });
            last = Some(seq);
            at = body.end;
            end = at as u64;
            continue;
        }
        // Damage: find the next good frame, if any.
        let next = (at + 1..written)
            .find_map(|i| frame_at(&buf, i, plausible(last, first)).map(|(seq, _)| (i, seq)));
        match next {
            Some((i, seq)) => {
                let low = last.map_or(first, |s| s + 1);
                damage.push(Damage::Skipped {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    bytes: (i - at) as u64,
                    seqs: (seq > low).then(|| low..=seq - 1),
                });
                // The frame at `i` is read next; the gap is reported above.
                last = Some(seq - 1);
                at = i;
            }
            None => {
                damage.push(Damage::TornTail {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    bytes: (written - at) as u64,
                });
                break;
            }
        }
    }
    Ok((records, damage, end))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new, empty segment whose first record will be `first_seq`, its name
/// made durable in the folder.
fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join(segment_name(first_seq)))?;
    sync_dir(dir)?;
    Ok(file)
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, first seq
    /// `first_seq` if it is new, and cuts off a torn tail. Returns what was
    /// found damaged in the last segment.
    pub fn open(
        dir: &Path,
        options: JournalOptions,
        first_seq: u64,
    ) -> io::Result<(Journal, Vec<Damage>)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the journal {} is in use by another process (is the daemon running?)",
                    dir.display()
                ),
            )
        })?;
        let mut segments = list_segments(dir)?;
        let mut damage = Vec::new();
        let (active, active_len, next_seq, filled) = match segments.last().copied() {
            None => {
                let file = create_segment(dir, first_seq)?;
                segments.push(first_seq);
                (file, 0, first_seq, 0)
            }
            Some(first) => {
                let path = dir.join(segment_name(first));
                let (records, found, end) = scan(&path, first)?;
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                if found.iter().any(|d| matches!(d, Damage::TornTail { .. })) {
                    file.set_len(end)?;
                    file.sync_all()?;
                }
                damage = found;
                let next = records.last().map_or(first, |r| r.position.seq + 1);
                let filled = file.metadata()?.len();
                (file, end, next, filled)
            }
        };
        let bytes = segments
            .iter()
            .filter_map(|s| std::fs::metadata(dir.join(segment_name(*s))).ok())
            .map(|m| m.len())
            .sum();
        let journal = Journal {
            filled,
            bytes,
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            active_len,
            next_seq,
            staged: Vec::new(),
            staged_count: 0,
            broken: None,
            remover: Remover::default(),
            _lock: lock,
        };
        Ok((journal, damage))
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq + self.staged_count
    }

    /// Adds a record to the group being staged and says where it will be.
    /// Nothing is written until [`Journal::commit`].
    pub fn stage(&mut self, payload: &[u8]) -> Position {
        if self.staged.is_empty() && self.active_len >= self.options.segment_bytes {
            // Roll over before the group: a group never spans two segments.
            if let Err(e) = self.roll() {
                self.broken
                    .get_or_insert(format!("cannot start a segment: {e}"));
            }
        }
        let position = Position {
            seq: self.next_seq(),
            offset: self.active_len + self.staged.len() as u64,
        };
        frame_into(&mut self.staged, position.seq, payload);
        self.staged_count += 1;
        position
    }

    fn roll(&mut self) -> io::Result<()> {
        self.active.sync_all()?;
        let file = create_segment(&self.dir, self.next_seq)?;
        self.active = file;
        self.active_len = 0;
        self.filled = 0;
        self.segments.push(self.next_seq);
        Ok(())
    }

    /// Writes the staged group in one write and (with `sync`) one
    /// `fdatasync`. On failure nothing of the group counts: the file is cut
    /// back to where it was, and after a failed sync the journal refuses
    /// every later append.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.staged);
        let count = std::mem::replace(&mut self.staged_count, 0);
        if let Some(why) = &self.broken {
            return Err(io::Error::other(why.clone()));
        }
        let end = self.active_len + group.len() as u64;
        if end > self.filled {
            // Zeros ahead, written with this group: one sync covers both,
            // and the groups after it overwrite zeros in place.
            let to = end + PREFILL.min(self.options.segment_bytes);
            let zeros = vec![0u8; (to - self.filled).min(1 << 20) as usize];
            let mut at = self.filled;
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                self.active.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            self.bytes += to - self.filled;
            self.filled = to;
        }
        if let Err(e) = self.active.write_all_at(&group, self.active_len) {
            // What got written must read as zeros again, not as a record.
            let zeros = vec![0u8; group.len()];
            if self.active.write_all_at(&zeros, self.active_len).is_err() {
                self.broken = Some(format!("a write to the journal failed earlier: {e}"));
            }
            return Err(e);
        }
        if self.options.sync {
            if let Err(e) = self.active.sync_data() {
                self.broken = Some(format!("a sync of the journal failed earlier: {e}"));
                return Err(e);
            }
        }
        self.active_len = end;
        self.next_seq += count;
        Ok(())
    }

    /// Drops a staged group without writing it.
    pub fn discard(&mut self) {
        self.rewind((0, 0));
    }

    /// The segments as (first seq, last seq) pairs, oldest first; the last,
    /// still appended to, is not among them.
    pub fn sealed_segments(&self) -> Vec<(u64, u64)> {
        self.segments.windows(2).map(|w| (w[0], w[1] - 1)).collect()
    }

    /// Lets go of a sealed segment (its first seq); its file is deleted on
    /// a thread of its own, soon after.
    pub fn remove_segment(&mut self, first: u64) -> io::Result<()> {
        let Some(i) = self.segments.iter().position(|&s| s == first) else {
            return Ok(());
        };
        if i + 1 == self.segments.len() {
            return Err(io::Error::other("the last segment is still written to"));
        }
        let path = self.dir.join(segment_name(first));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.bytes = self.bytes.saturating_sub(len);
        self.segments.remove(i);
        self.remover.remove(&self.dir, path);
        Ok(())
    }

    /// Waits until the files of the segments let go of are deleted.
    #[cfg(test)]
    pub fn settle(&mut self) {
        drop(std::mem::take(&mut self.remover));
    }

    /// Bytes held by all segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Where the group being staged stands, to go back to with `rewind`.
    pub fn mark(&self) -> (usize, u64) {
        (self.staged.len(), self.staged_count)
    }

    /// Drops what was staged after `mark`.
    pub fn rewind(&mut self, mark: (usize, u64)) {
        self.staged.truncate(mark.0);
        self.staged_count = mark.1;
    }

    /// Whether a group is staged.
    pub fn has_staged(&self) -> bool {
        self.staged_count > 0
    }
}

/// Records with seq ≥ `from`, in order, and the damage passed over.
pub fn read_from(dir: &Path, from: u64) -> io::Result<(Vec<Record>, Vec<Damage>)> {
    let segments = list_segments(dir)?;
    let start = segments.partition_point(|&s| s <= from).saturating_sub(1);
    let mut records = Vec::new();
    let mut damage = Vec::new();
    for (i, &first) in segments.iter().enumerate().skip(start) {
        let path = dir.join(segment_name(first));
        let (found, hurt, _) = scan(&path, first)?;
        let limit = segments.get(i + 1).copied().unwrap_or(u64::MAX);
        records.extend(
            found
                .into_iter()
                .filter(|r| r.position.seq >= from && r.position.seq < limit),
        );
        damage.extend(hurt.into_iter().filter(|d| match d {
            Damage::Skipped { seqs, .. } => seqs.as_ref().is_none_or(|s| *s.end() >= from),
            Damage::TornTail { .. } => true,
        }));
    }
    Ok((records, damage))
}

/// Reads the record at `position` from the journal in `dir` (one read;
/// a [`Reader`] keeps its segment list and file for the next).
pub fn read_at(dir: &Path, position: Position) -> io::Result<Vec<u8>> {
    Reader::new(dir).read(position)
}

mod reader;
pub use reader::Reader;

#[cfg(test)]
mod tests;
