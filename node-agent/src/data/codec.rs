//! A versioned byte encoding of a [`Dataset`], for sealing into a vault.
//!
//! Layout (all integers little-endian):
//! `MPDS` magic, u32 version (1), u8 kind, then
//! - tabular (kind 1): u64 rows, u64 features, u64 classes, each feature
//!   name (u32 length + UTF-8), features x f32 offset, features x f32
//!   scale, rows x features f32
//!   values, rows x i64 labels;
//! - text (kind 2): u64 docs, each doc as u32 role length + UTF-8 role and
//!   u64 text length + bytes.
//!
//! Decoding checks every length against the bytes actually present before
//! allocating, and the semantic invariants the rest of the crate relies on
//! (labels within classes, positive scales), so a damaged or hostile blob is
//! an error, never a panic or a huge allocation.

use super::{DataError, Dataset, Tabular, TextCorpus, TextDoc};

const MAGIC: &[u8; 4] = b"MPDS";
const VERSION: u32 = 1;
const KIND_TABULAR: u8 = 1;
const KIND_TEXT: u8 = 2;

pub fn encode_dataset(ds: &Dataset) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    match ds {
        Dataset::Tabular(t) => {
            out.push(KIND_TABULAR);
            for v in [t.len(), t.num_features, t.num_classes] {
                out.extend_from_slice(&(v as u64).to_le_bytes());
            }
            for name in &t.feature_names {
                put_str(&mut out, name);
            }
            out.reserve(4 * (2 * t.num_features + t.features.len()) + 8 * t.labels.len());
            let stats = t.feature_offset.iter().chain(&t.feature_scale);
            for v in stats.chain(&t.features) {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for l in &t.labels {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
        Dataset::Text(c) => {
            out.push(KIND_TEXT);
            out.extend_from_slice(&(c.docs.len() as u64).to_le_bytes());
            for d in &c.docs {
                put_str(&mut out, &d.role);
                out.extend_from_slice(&(d.text.len() as u64).to_le_bytes());
                out.extend_from_slice(&d.text);
            }
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names longer than u32::MAX bytes cannot come from a real file header.
    let bytes = &s.as_bytes()[..s.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

pub fn decode_dataset(bytes: &[u8]) -> Result<Dataset, DataError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(err("not a ModelPub data set (bad magic)"));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(err(format!(
            "unsupported format version {version} (this build reads {VERSION})"
        )));
    }
    let ds = match r.take(1, "kind")?[0] {
        KIND_TABULAR => Dataset::Tabular(decode_tabular(&mut r)?),
        KIND_TEXT => Dataset::Text(decode_text(&mut r)?),
        k => return Err(err(format!("unknown data set kind {k}"))),
    };
    if r.pos != bytes.len() {
        return Err(err(format!(
            "{} trailing bytes after the data set",
            bytes.len() - r.pos
        )));
    }
    Ok(ds)
}

fn decode_tabular(r: &mut Reader<'_>) -> Result<Tabular, DataError> {
    let rows = r.len("row count")?;
    let num_features = r.len("feature count")?;
    let num_classes = r.len("class count")?;
    let mut feature_names = Vec::new();
    for i in 0..num_features {
        feature_names.push(r.string(&format!("feature name {i}"))?);
    }
    let feature_offset = r.f32s(num_features, "feature offset")?;
    if let Some(o) = feature_offset.iter().find(|o| !o.is_finite()) {
        return Err(err(format!("feature offset {o} is not finite")));
    }
    let feature_scale = r.f32s(num_features, "feature scale")?;
    if let Some(s) = feature_scale.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        return Err(err(format!("feature scale {s} is not positive")));
    }
    let cells = rows
        .checked_mul(num_features)
        .ok_or_else(|| err("feature matrix size overflows"))?;
    let features = r.f32s(cells, "features")?;
    let labels = r.i64s(rows, "labels")?;
    if let Some(l) = labels
        .iter()
        .find(|l| usize::try_from(**l).map_or(true, |l| l >= num_classes))
    {
        return Err(err(format!("label {l} is outside 0..{num_classes}")));
    }
    Ok(Tabular {
        features,
        labels,
        num_features,
        num_classes,
        feature_names,
        feature_offset,
        feature_scale,
    })
}

fn decode_text(r: &mut Reader<'_>) -> Result<TextCorpus, DataError> {
    let n = r.len("document count")?;
    let mut docs = Vec::new();
    for i in 0..n {
        let role = r.string(&format!("role of document {i}"))?;
        let len = r.len(&format!("length of document {i}"))?;
        let text = r.take(len, &format!("text of document {i}"))?.to_vec();
        docs.push(TextDoc { role, text });
    }
    Ok(TextCorpus { docs })
}

fn err(msg: impl Into<String>) -> DataError {
    DataError::Decode(msg.into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DataError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(err(format!(
                "truncated at byte {}: {what} needs {n} bytes, {} left",
                self.pos,
                self.bytes.len() - self.pos
            )));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DataError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DataError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn len(&mut self, what: &str) -> Result<usize, DataError> {
        let v = u64::from_le_bytes(self.array(what)?);
        usize::try_from(v).map_err(|_| err(format!("{what} {v} is too large")))
    }

    fn string(&mut self, what: &str) -> Result<String, DataError> {
        let n = self.u32(what)? as usize;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
    }

    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>, DataError> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| err(format!("{what}: size overflows")))?;
        let s = self.take(bytes, what)?;
        Ok(s.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn i64s(&mut self, n: usize, what: &str) -> Result<Vec<i64>, DataError> {
        let bytes = n
            .checked_mul(8)
            .ok_or_else(|| err(format!("{what}: size overflows")))?;
        let s = self.take(bytes, what)?;
        Ok(s.chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                i64::from_le_bytes(a)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tabular() -> Dataset {
        Dataset::Tabular(Tabular {
            features: vec![1.0, -2.5, 3.0, 4.0],
            labels: vec![0, 2],
            num_features: 2,
            num_classes: 3,
            feature_names: vec!["a".into(), "béta".into()],
            feature_offset: vec![2.0, 0.75],
            feature_scale: vec![1.0, 3.25],
        })
    }

    fn text() -> Dataset {
        Dataset::Text(TextCorpus {
            docs: vec![
                TextDoc {
                    role: "ROMEO".into(),
                    text: b"O, she doth teach".to_vec(),
                },
                TextDoc {
                    role: String::new(),
                    text: vec![0, 255, 10],
                },
            ],
        })
    }

    #[test]
    fn round_trips() {
        for ds in [tabular(), text()] {
            assert_eq!(decode_dataset(&encode_dataset(&ds)).unwrap(), ds);
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decode_dataset(b"").is_err());
        assert!(decode_dataset(b"hello world, not a data set").is_err());
        for ds in [tabular(), text()] {
            let bytes = encode_dataset(&ds);
            for cut in 0..bytes.len() {
                assert!(decode_dataset(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_dataset(&longer).is_err());
        }
        // A row count of 2^60 must be refused without allocating.
        let mut bytes = encode_dataset(&tabular());
        bytes[9..17].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = decode_dataset(&bytes).unwrap_err().to_string();
        assert!(e.contains("cannot decode data set"), "{e}");
    }

    #[test]
    fn label_out_of_range_is_refused() {
        let Dataset::Tabular(mut t) = tabular() else {
            unreachable!()
        };
        t.labels[1] = 3;
        let e = decode_dataset(&encode_dataset(&Dataset::Tabular(t)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 3 is outside 0..3"), "{e}");
    }
}
