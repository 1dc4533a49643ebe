use super::*;
use std::os::unix::fs::FileExt;

fn opts() -> JournalOptions {
    JournalOptions {
        sync: true,
        segment_bytes: 1 << 20,
    }
}

fn append(j: &mut Journal, payloads: &[&[u8]]) -> Vec<Position> {
    let positions = payloads.iter().map(|p| j.stage(p)).collect();
    j.commit().unwrap();
    positions
}

fn last_segment(dir: &Path) -> PathBuf {
    let first = *list_segments(dir).unwrap().last().unwrap();
    dir.join(segment_name(first))
}

#[test]
fn a_group_is_read_back_in_order_and_at_its_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, damage) = Journal::open(tmp.path(), opts(), 7).unwrap();
    assert!(damage.is_empty());
    let first = append(&mut j, &[b"one", b"two"]);
    let second = append(&mut j, &[b"three"]);
    assert_eq!(first[0].seq, 7);
    assert_eq!(second[0].seq, 9);
    assert_eq!(read_at(tmp.path(), first[1]).unwrap(), b"two");
    assert_eq!(read_at(tmp.path(), second[0]).unwrap(), b"three");
    let (all, damage) = read_from(tmp.path(), 8).unwrap();
    assert!(damage.is_empty());
    let payloads: Vec<_> = all.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"two"[..], b"three"]);
    drop(j);
    let (j, _) = Journal::open(tmp.path(), opts(), 0).unwrap();
    assert_eq!(
        j.next_seq(),
        10,
        "a reopened journal goes on after its last record"
    );
}

#[test]
fn a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    let err = Journal::open(tmp.path(), opts(), 1).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_torn_tail_is_cut_off_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    append(&mut j, &[b"kept-1", b"kept-2"]);
    let end = j.active_len;
    drop(j);
    // The next group's write cut short: a whole header, half a payload.
    let mut frame = Vec::new();
    frame_into(&mut frame, 3, &[b'x'; 100]);
    // Written where the records end, over the zeros written ahead.
    let f = OpenOptions::new()
        .write(true)
        .open(last_segment(tmp.path()))
        .unwrap();
    f.write_all_at(&frame[..60], end).unwrap();
    drop(f);
    let (mut j, damage) = Journal::open(tmp.path(), opts(), 1).unwrap();
    assert_eq!(
        damage,
        [Damage::TornTail {
            segment: last_segment(tmp.path()),
            offset: end,
            bytes: 60
        }]
    );
    assert!(damage[0].to_string().contains("torn tail of 60 bytes"));
    assert_eq!(
        std::fs::metadata(last_segment(tmp.path())).unwrap().len(),
        end
    );
    // Appends go on after the good frames, with the next seq.
    let p = append(&mut j, &[b"after"]);
    assert_eq!(
        p[0],
        Position {
            seq: 3,
            offset: end
        }
    );
    let (all, damage) = read_from(tmp.path(), 0).unwrap();
    assert!(damage.is_empty());
    assert_eq!(all.len(), 3);
}

#[test]
fn the_zeros_written_ahead_are_no_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    append(&mut j, &[b"kept"]);
    let end = j.active_len;
    drop(j);
    let len = std::fs::metadata(last_segment(tmp.path())).unwrap().len();
    assert!(len > end, "zeros are written ahead of the records");
    let (mut j, damage) = Journal::open(tmp.path(), opts(), 1).unwrap();
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(j.next_seq(), 2);
    // The next group overwrites the zeros in place.
    let p = append(&mut j, &[b"next"]);
    assert_eq!(p[0].offset, end);
    assert_eq!(
        std::fs::metadata(last_segment(tmp.path())).unwrap().len(),
        len
    );
    let (all, damage) = read_from(tmp.path(), 0).unwrap();
    assert!(damage.is_empty());
    assert_eq!(all.len(), 2);
}

#[test]
fn a_damaged_record_is_skipped_and_the_rest_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    let p = append(&mut j, &[b"first", b"second-record", b"third"]);
    drop(j);
    // Flip a byte in the second record's payload.
    let path = last_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[p[1].offset as usize + HEADER + 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (mut j, damage) = Journal::open(tmp.path(), opts(), 1).unwrap();
    assert_eq!(
        damage,
        [Damage::Skipped {
            segment: path.clone(),
            offset: p[1].offset,
            bytes: p[2].offset - p[1].offset,
            seqs: Some(2..=2)
        }]
    );
    assert!(damage[0].to_string().contains("records 2..=2 are lost"));
    // Not a tail: nothing is cut, and appends go on after the third.
    assert_eq!(j.next_seq(), 4);
    append(&mut j, &[b"fourth"]);
    let (all, damage) = read_from(tmp.path(), 1).unwrap();
    assert_eq!(damage.len(), 1);
    let seqs: Vec<_> = all.iter().map(|r| r.position.seq).collect();
    assert_eq!(seqs, [1, 3, 4]);
    let err = read_at(tmp.path(), p[1]).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(read_at(tmp.path(), p[2]).unwrap(), b"third");
}

#[test]
fn a_damaged_length_is_passed_over_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    let p = append(&mut j, &[b"first", b"second", b"third"]);
    drop(j);
    let path = last_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // The length field of the second frame claims a huge payload.
    bytes[p[1].offset as usize + 3] = 0x7f;
    std::fs::write(&path, &bytes).unwrap();
    let (all, damage) = read_from(tmp.path(), 1).unwrap();
    let seqs: Vec<_> = all.iter().map(|r| r.position.seq).collect();
    assert_eq!(seqs, [1, 3]);
    assert!(matches!(&damage[..], [Damage::Skipped { seqs, .. }] if *seqs == Some(2..=2)));
}

#[test]
fn segments_roll_over_and_old_ones_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalOptions {
        sync: false,
        segment_bytes: 1000,
    };
    let (mut j, _) = Journal::open(tmp.path(), small, 1).unwrap();
    let payload = [b'p'; 300];
    let mut positions = Vec::new();
    for _ in 0..10 {
        positions.extend(append(&mut j, &[&payload, &payload]));
    }
    let sealed = j.sealed_segments();
    assert!(sealed.len() >= 3, "{sealed:?}");
    // Every record reads back from whichever segment holds it.
    for p in &positions {
        assert_eq!(read_at(tmp.path(), *p).unwrap(), payload);
    }
    let (all, damage) = read_from(tmp.path(), 5).unwrap();
    assert!(damage.is_empty());
    assert_eq!(all.first().unwrap().position.seq, 5);
    assert_eq!(all.len(), 16);
    let (first, last) = sealed[0];
    j.remove_segment(first).unwrap();
    j.settle();
    assert_eq!(list_segments(tmp.path()).unwrap()[0], last + 1);
    let err = read_at(tmp.path(), positions[0]).unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
    assert!(j
        .remove_segment(*list_segments(tmp.path()).unwrap().last().unwrap())
        .is_err());
    // Reopening finds the last segment and goes on.
    drop(j);
    let (j, damage) = Journal::open(tmp.path(), small, 1).unwrap();
    assert!(damage.is_empty());
    assert_eq!(j.next_seq(), 21);
}

#[test]
fn a_discarded_group_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), opts(), 1).unwrap();
    j.stage(b"gone");
    j.discard();
    let p = append(&mut j, &[b"kept"]);
    assert_eq!(p[0], Position { seq: 1, offset: 0 });
    let (all, _) = read_from(tmp.path(), 0).unwrap();
    assert_eq!(all.len(), 1);
}
