//! Headers lockstep adds to every mirrored record, and how to read them back.
//!
//! - `lockstep.src.offset`: the record's offset in the source partition (decimal ASCII), the
//!   exact offset map used for resuming and for drift tracking;
//! - `lockstep.src.cluster`: the source's name, so a tail read ignores records of another hop;
//! - `lockstep.origin`: where the record was first produced (kept when already present), so
//!   active-active flows never loop: a record whose origin is the target site is skipped.
//!
//! Incoming `lockstep.src.*` headers of an earlier hop are replaced, never duplicated.

use rdkafka::message::{Header, Headers, OwnedHeaders};

// The names are defined once, in the crate the offset map (drift) reads them with too.
pub use lockstep_config::headers::{ORIGIN, SRC_CLUSTER, SRC_OFFSET};

/// The origin of a record: its `lockstep.origin` header, if any.
pub fn origin<H: Headers>(headers: Option<&H>) -> Option<&[u8]> {
    let h = headers?;
    h.iter().find(|h| h.key == ORIGIN).and_then(|h| h.value)
}

/// The source offset this hop recorded, when the record came from `cluster`.
pub fn source_offset<H: Headers>(headers: Option<&H>, cluster: &str) -> Option<i64> {
    let h = headers?;
    let mut offset = None;
    let mut from_cluster = false;
    for header in h.iter() {
        match header.key {
            SRC_OFFSET => {
                offset = header
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            }
            SRC_CLUSTER => from_cluster = header.value == Some(cluster.as_bytes()),
            _ => {}
        }
    }
    if from_cluster {
        offset
    } else {
        None
    }
}

/// The mirrored record's headers: the source's own (minus an earlier hop's offset headers),
/// then ours. Returns the headers and their encoded size.
pub fn mirrored<H: Headers>(
    source: Option<&H>,
    source_cluster: &str,
    offset: i64,
) -> (OwnedHeaders, usize) {
    let mut out = OwnedHeaders::new_with_capacity(source.map(|h| h.count()).unwrap_or(0) + 3);
    let mut size = 0;
    let mut has_origin = false;
    if let Some(h) = source {
        for header in h.iter() {
            if header.key == SRC_OFFSET || header.key == SRC_CLUSTER {
                continue;
            }
            has_origin |= header.key == ORIGIN;
            size += header.key.len() + header.value.map(<[u8]>::len).unwrap_or(0);
            out = out.insert(header);
        }
    }
    let offset_text = offset.to_string();
    size += SRC_OFFSET.len() + offset_text.len() + SRC_CLUSTER.len() + source_cluster.len();
    out = out
        .insert(Header {
            key: SRC_OFFSET,
            value: Some(offset_text.as_bytes()),
        })
        .insert(Header {
            key: SRC_CLUSTER,
            value: Some(source_cluster.as_bytes()),
        });
    if !has_origin {
        size += ORIGIN.len() + source_cluster.len();
        out = out.insert(Header {
            key: ORIGIN,
            value: Some(source_cluster.as_bytes()),
        });
    }
    (out, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_offset_keeps_user_headers_and_replaces_an_earlier_hop() {
        let src = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(b"abc".as_slice()),
            })
            .insert(Header {
                key: SRC_OFFSET,
                value: Some(b"999".as_slice()),
            })
            .insert(Header {
                key: SRC_CLUSTER,
                value: Some(b"far".as_slice()),
            })
            .insert(Header {
                key: ORIGIN,
                value: Some(b"dc-1".as_slice()),
            });
        let (out, _) = mirrored(Some(&src), "up", 42);
        let keys: Vec<&str> = out.iter().map(|h| h.key).collect();
        assert_eq!(keys, vec!["trace", ORIGIN, SRC_OFFSET, SRC_CLUSTER]);
        assert_eq!(source_offset(Some(&out), "up"), Some(42));
        assert_eq!(source_offset(Some(&out), "other"), None);
        assert_eq!(origin(Some(&out)), Some(b"dc-1".as_slice()));
    }

    #[test]
    fn origin_defaults_to_the_source() {
        let (out, _) = mirrored::<OwnedHeaders>(None, "up", 0);
        assert_eq!(origin(Some(&out)), Some(b"up".as_slice()));
    }
}
