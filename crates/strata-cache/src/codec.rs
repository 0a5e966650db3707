//! The L2 value envelope: one header byte, then the payload. The header says whether the
//! payload is stored as is or lz4-compressed (block format, original size prepended), so a
//! reader never guesses and an unknown header is a miss rather than garbage.

use bytes::Bytes;

const RAW: u8 = 0x01;
const LZ4: u8 = 0x02;
/// Largest value a compressed envelope may claim to expand to.
const MAX_DECODED: usize = 256 << 20;

/// Encodes `value` for L2, compressing it when it is at least `compress_above` bytes long and
/// compression saves space.
pub(crate) fn encode(value: &[u8], compress_above: usize) -> Vec<u8> {
    if value.len() >= compress_above {
        let packed = lz4_flex::block::compress_prepend_size(value);
        if packed.len() < value.len() {
            let mut out = Vec::with_capacity(packed.len() + 1);
            out.push(LZ4);
            out.extend_from_slice(&packed);
            return out;
        }
    }
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(RAW);
    out.extend_from_slice(value);
    out
}

/// Decodes an L2 value; `None` for an envelope this version does not understand or a
/// corrupt payload (treated as a miss).
pub(crate) fn decode(stored: &[u8]) -> Option<Bytes> {
    let (&head, payload) = stored.split_first()?;
    match head {
        RAW => Some(Bytes::copy_from_slice(payload)),
        LZ4 => {
            // A corrupt size must not make the reader allocate gigabytes.
            let size = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
            if size > MAX_DECODED {
                return None;
            }
            lz4_flex::block::decompress(&payload[4..], size)
                .ok()
                .filter(|v| v.len() == size)
                .map(Bytes::from)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_stay_raw_and_round_trip() {
        let v = b"{\"a\":1}";
        let e = encode(v, 512);
        assert_eq!(e[0], RAW);
        assert_eq!(decode(&e).as_deref(), Some(&v[..]));
    }

    #[test]
    fn large_repetitive_values_are_compressed_and_round_trip() {
        let v = "{\"text\":\"the same words again and again\"},".repeat(100);
        let e = encode(v.as_bytes(), 512);
        assert_eq!(e[0], LZ4);
        assert!(e.len() < v.len() / 4, "{} vs {}", e.len(), v.len());
        assert_eq!(decode(&e).as_deref(), Some(v.as_bytes()));
    }

    #[test]
    fn incompressible_values_are_kept_raw() {
        let v: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let e = encode(&v, 512);
        assert_eq!(decode(&e).as_deref(), Some(&v[..]));
    }

    #[test]
    fn unknown_or_corrupt_envelopes_are_misses() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x7f, 1, 2, 3]), None);
        assert_eq!(decode(&[LZ4, 0xff, 0xff, 0xff, 0x7f, 1]), None);
        assert_eq!(decode(&[LZ4, 10, 0, 0, 0, 0xf0]), None);
        assert_eq!(decode(&[LZ4, 1]), None);
    }
}
