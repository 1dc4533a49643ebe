//! Reading single records by position, as the queries do (a request's
//! headers and body, an event's envelope): the segment list and the last
//! segment's file are kept between reads, and looked up again when a read
//! finds its record elsewhere (a segment started or removed since).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{frame_at, list_segments, segment_name, Position, HEADER, MAX_RECORD};

pub struct Reader {
    dir: PathBuf,
    /// First seqs of the segments as last listed (None: not listed yet).
    segments: Option<Vec<u64>>,
    /// The segment last read from: its first seq and its file.
    open: Option<(u64, File)>,
}

impl Reader {
    pub fn new(dir: &Path) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            segments: None,
            open: None,
        }
    }

    /// The record's payload. A read that fails on the segments as known
    /// is tried once more after listing them again.
    pub fn read(&mut self, position: Position) -> io::Result<Vec<u8>> {
        if self.segments.is_some() {
            if let Ok(payload) = self.try_read(position) {
                return Ok(payload);
            }
        }
        self.segments = Some(list_segments(&self.dir)?);
        self.open = None;
        self.try_read(position)
    }

    fn try_read(&mut self, position: Position) -> io::Result<Vec<u8>> {
        let segments = self.segments.as_deref().unwrap_or_default();
        let i = segments.partition_point(|&s| s <= position.seq);
        let Some(&first) = i.checked_sub(1).and_then(|i| segments.get(i)) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("journal record {} was removed", position.seq),
            ));
        };
        if self.open.as_ref().is_none_or(|(s, _)| *s != first) {
            let file = File::open(self.dir.join(segment_name(first)))?;
            self.open = Some((first, file));
        }
        let (_, file) = self.open.as_ref().expect("opened above");
        read_frame(file, position)
    }
}

/// The payload of the frame at `position.offset` in `file`, if it is a good
/// frame of that seq.
fn read_frame(file: &File, position: Position) -> io::Result<Vec<u8>> {
    let damaged = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("journal record {} is damaged (its CRC fails)", position.seq),
        )
    };
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, position.offset)?;
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD {
        return Err(damaged());
    }
    let mut buf = head.to_vec();
    buf.resize(HEADER + len, 0);
    file.read_exact_at(&mut buf[HEADER..], position.offset + HEADER as u64)
        .map_err(|_| damaged())?;
    match frame_at(&buf, 0, position.seq..position.seq + 1) {
        Some((_, body)) => Ok(buf[body].to_vec()),
        None => Err(damaged()),
    }
}
