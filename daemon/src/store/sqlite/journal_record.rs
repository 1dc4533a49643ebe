//! An ingest's journal record: what it holds (the request's headers and
//! body, its events' envelopes, what became of each) and its bytes, made on
//! the caller's thread but for the results, which only the writer decides
//! (`ingest.rs`). Records are compressed (zstd); records written before
//! compression are read as they were.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::journal;
use crate::event::Event;
use crate::store::{Ingested, RequestRecord, StoreError, StoreResult, StoredRequest};

/// The first byte of an ingest record's payload: `[INGEST][json length
/// u32][json][body]` (records written before compression; still read).
const INGEST: u8 = 1;

/// The first byte of a compressed ingest record's payload:
/// `[INGEST_PACKED][frame length u32][frame][results]`, the frame a zstd
/// frame of `[head length u32][head][body]`, the head the record's JSON up
/// to its results, `results` the rest of the JSON (`,"results":[…]}`).
const INGEST_PACKED: u8 = 2;

/// How hard records are compressed: zstd's fastest level takes a 1 KiB
/// webhook's record (~2.9 KB) to about a third, for a few µs.
const PACK_LEVEL: i32 = 1;

thread_local! {
    /// A compression context per thread, made once.
    static PACKER: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// A decompression context per thread, made once (making one is most of
    /// what reading a small record would cost: queries read many).
    static UNPACKER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `[head length u32][head][body]`, compressed.
fn pack(head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut plain = Vec::with_capacity(4 + head.len() + body.len());
    plain.extend_from_slice(&(head.len() as u32).to_le_bytes());
    plain.extend_from_slice(head);
    plain.extend_from_slice(body);
    PACKER.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Some(zstd::bulk::Compressor::new(PACK_LEVEL)?);
        }
        p.as_mut().expect("made above").compress(&plain)
    })
}

/// The head and body of a packed record's frame; refuses a frame that
/// claims more than a record may hold.
fn unpack(frame: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or("a compressed record without its size")?;
    if size > journal::MAX_RECORD as u64 {
        return Err(format!("a compressed record claiming {size} bytes"));
    }
    let mut plain = UNPACKER
        .with(|u| {
            let mut u = u.borrow_mut();
            if u.is_none() {
                *u = Some(zstd::bulk::Decompressor::new()?);
            }
            u.as_mut()
                .expect("made above")
                .decompress(frame, size as usize)
        })
        .map_err(|e| e.to_string())?;
    let len = plain
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("a compressed record cut short")?;
    if plain.len() < 4 + len {
        return Err("a compressed record cut short".into());
    }
    let body = plain.split_off(4 + len);
    plain.drain(..4);
    Ok((plain, body))
}

/// What the writer needs of an event: its keys and its envelope, encoded
/// on the caller's thread.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EncodedEvent {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) kind: String,
    pub(super) dedup_key: String,
    /// The event as JSON, held in the record as it is (records written
    /// before held it as a JSON string: both read back the same).
    #[serde(deserialize_with = "envelope_json")]
    pub(super) envelope: Box<RawValue>,
    pub(super) order: Option<switchyard_plugin_api::Order>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) handshake: bool,
}

/// JSON kept as it is, whether written as JSON or (older records) as a
/// string holding JSON.
fn envelope_json<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    if !raw.get().starts_with('"') {
        return Ok(raw);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    RawValue::from_string(text).map_err(serde::de::Error::custom)
}

impl EncodedEvent {
    pub(super) fn new(e: &Event) -> StoreResult<EncodedEvent> {
        Ok(EncodedEvent {
            id: e.id.clone(),
            source: e.source.clone(),
            kind: e.kind.clone(),
            dedup_key: e.dedup_key.clone(),
            envelope: serde_json::value::to_raw_value(e)
                .map_err(|err| StoreError::Other(err.to_string()))?,
            order: e.order.clone(),
            handshake: e.handshake,
        })
    }
}

/// A request as its journal record holds it (the body follows the JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IngestRecord {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) received_at_ms: i64,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    /// `[[name, value], ...]`, redacted: JSON in the record (records
    /// written before held it as a JSON string: both read back the same).
    #[serde(deserialize_with = "envelope_json")]
    pub(super) headers: Box<RawValue>,
    pub(super) events: Vec<EncodedEvent>,
    /// What became of each event, in order: decided once, when it came in.
    pub(super) results: Vec<Ingested>,
    pub(super) dedup_window_ms: i64,
    /// The record's JSON but for `results` and its closing brace, with the
    /// body, compressed (see [`INGEST_PACKED`]): made on the caller's thread
    /// (the headers escaped, the envelopes copied, the whole compressed), so
    /// that the writer thread, which every ingest waits for, only adds the
    /// results. Empty for a record read back from the journal.
    #[serde(skip)]
    packed: Vec<u8>,
}

/// The fields of an [`IngestRecord`] known before the writer decides,
/// borrowed, in the record's JSON form.
#[derive(Serialize)]
struct Head<'a> {
    id: &'a str,
    source: &'a str,
    pub(super) received_at_ms: i64,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a RawValue,
    events: &'a [EncodedEvent],
    pub(super) dedup_window_ms: i64,
}

impl IngestRecord {
    pub(super) fn new(
        request: &StoredRequest,
        events: Vec<EncodedEvent>,
        dedup_window_ms: i64,
    ) -> IngestRecord {
        let mut record = IngestRecord {
            id: request.id.clone(),
            source: request.source.clone(),
            received_at_ms: request.received_at_ms,
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: serde_json::value::to_raw_value(&request.headers)
                .unwrap_or_else(|_| RawValue::from_string("[]".into()).expect("JSON")),
            events,
            results: Vec::new(),
            dedup_window_ms,
            packed: Vec::new(),
        };
        let head = Head {
            id: &record.id,
            source: &record.source,
            received_at_ms: record.received_at_ms,
            method: &record.method,
            path: &record.path,
            query: &record.query,
            headers: &record.headers,
            events: &record.events,
            dedup_window_ms: record.dedup_window_ms,
        };
        if let Ok(mut json) = serde_json::to_vec(&head) {
            if json.pop() == Some(b'}') {
                // Left empty if it cannot be compressed: written whole then.
                record.packed = pack(&json, &request.body).unwrap_or_default();
            }
        }
        record
    }

    /// The payload: packed (see [`INGEST_PACKED`]) with the results added,
    /// or (a record read back) the whole record serialized here, as
    /// `[INGEST][json length u32][json][body]`.
    pub(super) fn encode(&self, body: &[u8]) -> StoreResult<Vec<u8>> {
        let error = |e: serde_json::Error| StoreError::Other(e.to_string());
        if !self.packed.is_empty() {
            let mut out = Vec::with_capacity(5 + self.packed.len() + 64);
            out.push(INGEST_PACKED);
            out.extend_from_slice(&(self.packed.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.packed);
            out.extend_from_slice(b",\"results\":");
            serde_json::to_writer(&mut out, &self.results).map_err(error)?;
            out.push(b'}');
            return Ok(out);
        }
        let mut out = Vec::with_capacity(5 + 1024 + body.len());
        out.push(INGEST);
        out.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut out, self).map_err(error)?;
        let len = (out.len() - 5) as u32;
        out[1..5].copy_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        Ok(out)
    }

    /// The record and its body, from a payload of either kind.
    pub(super) fn decode(payload: &[u8]) -> Result<(IngestRecord, Cow<'_, [u8]>), String> {
        let (&kind, rest) = payload.split_first().ok_or("an empty record")?;
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("a record cut short")?;
        let inner = rest.get(4..4 + len).ok_or("a record cut short")?;
        match kind {
            INGEST => {
                let record = serde_json::from_slice(inner).map_err(|e| e.to_string())?;
                Ok((record, Cow::Borrowed(&rest[4 + len..])))
            }
            INGEST_PACKED => {
                let (mut json, body) = unpack(inner)?;
                json.extend_from_slice(&rest[4 + len..]);
                let record = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
                Ok((record, Cow::Owned(body)))
            }
            kind => Err(format!("a record of unknown kind {kind}")),
        }
    }

    /// The request as the admin API shows it.
    pub(super) fn request(&self, body: &[u8], verdict: String) -> RequestRecord {
        RequestRecord {
            id: self.id.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: serde_json::from_str(self.headers.get()).unwrap_or_default(),
            body: String::from_utf8_lossy(body).into_owned(),
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &str, body: &[u8]) -> Vec<u8> {
        let mut out = vec![INGEST];
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_record_written_from_its_head_reads_back_as_one_serialized_whole() {
        let request = StoredRequest {
            id: "r1".into(),
            source: "tight".into(),
            received_at_ms: 7,
            method: "POST".into(),
            path: "/".into(),
            query: "a=\"b\"".into(),
            headers: vec![("x-quote".into(), "say \"hi\"".into())],
            body: bytes::Bytes::from_static(b"{}"),
        };
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "01J", "source": "tight", "provider": "tight", "type": "tight.a",
            "received_at": "2026-01-01T00:00:00Z", "time": "2026-01-01T00:00:00Z", "dedup_key": "k", "data": {"q": "\"x\""}
        }))
        .unwrap();
        let mut record = IngestRecord::new(&request, vec![EncodedEvent::new(&event).unwrap()], 9);
        assert!(!record.packed.is_empty());
        record.results = vec![Ingested::New("01J".into())];
        let packed = record.encode(b"ignored: the body is packed").unwrap();
        assert_eq!(packed[0], INGEST_PACKED);
        let (decoded, body) = IngestRecord::decode(&packed).unwrap();
        assert_eq!(&*body, b"{}");
        // The same record as one serialized whole (and written so when read
        // back: a record is written once, but say so).
        let whole = decoded.encode(&body).unwrap();
        assert_eq!(whole[0], INGEST);
        let (again, again_body) = IngestRecord::decode(&whole).unwrap();
        assert_eq!(&*again_body, b"{}");
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::to_value(&again).unwrap()
        );
        assert_eq!(decoded.results.len(), 1);
        assert_eq!(decoded.headers.get(), record.headers.get());
        assert_eq!(decoded.request(b"", String::new()).headers, request.headers);
        assert_eq!(
            decoded.events[0].envelope.get(),
            record.events[0].envelope.get()
        );
    }

    /// A request of `body`, with one event carrying `data`.
    fn record_of(body: &[u8], data: serde_json::Value) -> IngestRecord {
        let request = StoredRequest {
            id: "r1".into(),
            source: "tight".into(),
            received_at_ms: 7,
            method: "POST".into(),
            path: "/hooks/tight".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes::Bytes::copy_from_slice(body),
        };
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "01J", "source": "tight", "provider": "tight", "type": "tight.a",
            "received_at": "2026-01-01T00:00:00Z", "time": "2026-01-01T00:00:00Z",
            "dedup_key": "k", "data": data
        }))
        .unwrap();
        IngestRecord::new(&request, vec![EncodedEvent::new(&event).unwrap()], 9)
    }

    #[test]
    fn a_record_is_kept_compressed_and_reads_back_whole() {
        let words = [
            "invoice", "client", "viewed", "payment", "due", "order", "total",
        ];
        let text: Vec<&str> = (0..160)
            .map(|i| words[(i * 7 + i / 3) % words.len()])
            .collect();
        let data = serde_json::json!({ "note": text.join(" ") });
        let body = serde_json::to_vec(&data).unwrap();
        let mut record = record_of(&body, data.clone());
        record.results = vec![Ingested::New("01J".into())];
        let packed = record.encode(&body).unwrap();
        record.packed.clear();
        let plain = record.encode(&body).unwrap();
        assert!(
            packed.len() * 2 < plain.len(),
            "compressed {} bytes, plain {}",
            packed.len(),
            plain.len()
        );
        let (decoded, read_body) = IngestRecord::decode(&packed).unwrap();
        assert_eq!(&*read_body, &body[..]);
        let envelope: serde_json::Value =
            serde_json::from_str(decoded.events[0].envelope.get()).unwrap();
        assert_eq!(envelope["data"], data);
        assert_eq!(decoded.results, [Ingested::New("01J".into())]);
    }

    #[test]
    fn a_damaged_or_boastful_compressed_record_is_refused_not_trusted() {
        let mut record = record_of(b"{\"a\":1}", serde_json::json!({"a": 1}));
        record.results = vec![];
        let packed = record.encode(b"").unwrap();
        // Bytes of its frame changed (the journal's CRC finds this first;
        // a record is still never trusted).
        let mut damaged = packed.clone();
        let middle = 5 + (damaged.len() - 5) / 3;
        for b in &mut damaged[middle..middle + 8] {
            *b ^= 0x5a;
        }
        assert!(IngestRecord::decode(&damaged).is_err());
        // Its frame cut short.
        assert!(IngestRecord::decode(&packed[..packed.len() / 2]).is_err());
        // A frame claiming more than a record may hold: refused before any
        // of it is made. (A zstd frame header: magic, a descriptor saying
        // "one segment, an 8-byte content size", the size; then one empty
        // last block.)
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        frame.extend_from_slice(&(journal::MAX_RECORD as u64 + 1).to_le_bytes());
        frame.extend_from_slice(&[0x01, 0x00, 0x00]);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&frame).unwrap(),
            Some(journal::MAX_RECORD as u64 + 1)
        );
        let mut payload = vec![INGEST_PACKED];
        payload.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        payload.extend_from_slice(&frame);
        let err = IngestRecord::decode(&payload).unwrap_err();
        assert!(err.contains("claiming"), "{err}");
    }

    #[test]
    fn an_envelope_reads_back_the_same_written_as_json_or_as_an_older_record_string() {
        let envelope = r#"{"id":"01J","type":"a.b","data":{"quote":"\"x\""}}"#;
        let record = |envelope: &str| {
            format!(
                r#"{{"id":"r","source":"s","received_at_ms":1,"method":"POST","path":"/","query":"",
                "headers":"[[\"x-a\",\"1\"]]","events":[{{"id":"01J","source":"s","kind":"a.b","dedup_key":"k",
                "envelope":{envelope},"order":null}}],"results":[],"dedup_window_ms":0}}"#
            )
        };
        let as_json = payload(&record(envelope), b"body");
        let as_string = payload(&record(&serde_json::to_string(envelope).unwrap()), b"body");
        for bytes in [&as_json, &as_string] {
            let (decoded, body) = IngestRecord::decode(bytes).unwrap();
            assert_eq!(&*body, b"body");
            assert_eq!(decoded.events[0].envelope.get(), envelope);
            // Headers written as a string of JSON (as records before held
            // them) read back as they were.
            let shown = decoded.request(&body, String::new()).headers;
            assert_eq!(shown, [("x-a".to_string(), "1".to_string())]);
            // Written again, it is written as JSON, not as a string.
            let again = decoded.encode(&body).unwrap();
            let text = String::from_utf8_lossy(&again);
            assert!(
                text.contains(&format!(r#""envelope":{envelope}"#)),
                "{text}"
            );
        }
    }
}
